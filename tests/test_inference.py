import numpy as np
import pytest

from iunet.clicks import Click, ClickSize
from iunet.inference import Predictor, Session, propagate, resolve_device, step_sessions


@pytest.fixture(scope="module")
def predictor(tiny_checkpoint):
    return Predictor(tiny_checkpoint, device="cpu")


def test_device_choice():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda")


def test_predict_any_size_and_batch_matches_single(predictor):
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 100, (100, 80)).astype(np.float32), rng.normal(0, 100, (64, 64)).astype(np.float32)
    from iunet.clicks import Click

    ca, cb = [Click(50, 40, True)], [Click(10, 10, True), Click(60, 60, False)]
    pa, pb = predictor.predict_batch([a, b], [ca, cb])
    assert pa.shape == (100, 80) and pb.shape == (64, 64)
    assert 0 <= pa.min() and pa.max() <= 1
    np.testing.assert_allclose(pa, predictor.predict(a, ca), atol=1e-5)


def test_session_click_undo_reset(predictor):
    img = np.random.default_rng(1).normal(0, 100, (96, 96)).astype(np.float32)
    s = Session(predictor, img, ClickSize(alpha=1 / 800))
    assert s.mask.sum() == 0 and s.next_radius_px == 5.0  # first click: default size
    s.add_click(40, 40, True)
    first = s.probability.copy()
    assert s.clicks[0].radius_px == 5.0 and s.last_latency_ms > 0
    expected_r = ClickSize(alpha=1 / 800).radius_for(s.mask_area_px)
    s.add_click(10, 10, False)
    assert s.clicks[1].radius_px == pytest.approx(expected_r)  # dynamic: α · current area
    assert s.undo()
    np.testing.assert_array_equal(s.probability, first)  # undo restores the mask exactly
    assert len(s.clicks) == 1
    s.reset()
    assert s.clicks == () and s.probability is None and not s.undo()


def test_click_outside_image_is_refused(predictor):
    s = Session(predictor, np.zeros((32, 32), np.float32))
    with pytest.raises(ValueError, match="outside the image"):
        s.add_click(40, 3, True)
    assert s.clicks == ()  # nothing changed


def test_sessions_share_predictor_not_state(predictor):
    rng = np.random.default_rng(2)
    s1 = Session(predictor, rng.normal(0, 100, (64, 64)).astype(np.float32))
    s2 = Session(predictor, rng.normal(0, 100, (64, 64)).astype(np.float32))
    step_sessions([s1, s2], [(5, 5, True), (30, 30, True)])
    assert s1.clicks[0].y == 5 and s2.clicks[0].y == 30
    s1.undo()
    assert s1.clicks == () and len(s2.clicks) == 1
    # batched step equals one-by-one
    s3 = Session(predictor, s2.image_hu)
    s3.add_click(30, 30, True)
    np.testing.assert_allclose(s3.probability, s2.probability, atol=1e-5)


def test_propagate_shapes(predictor):
    vol = np.random.default_rng(3).normal(0, 50, (5, 48, 48)).astype(np.float32)
    start = np.zeros((48, 48), bool)
    start[14:34, 14:34] = True
    out = propagate(predictor, vol, 2, start, min_area_px=1)
    assert out.shape == vol.shape and out[2].sum() == start.sum()
    with pytest.raises(ValueError):
        propagate(predictor, vol, 9, start)


# -- volumes: propagation that stops, 3D corrections, exact undo ---------------------------

from types import SimpleNamespace

import torch

from iunet.inference import VolumeSession, accept_propagated, clicked_piece


class OraclePredictor:
    """A stand-in for a perfect propagation model: the slice's bright object (HU > 0) where it
    touches the previous mask or a positive click, minus the disks of negative clicks. It lets
    the tests check the propagation engine itself, independent of any weights."""

    def __init__(self):
        self.config = SimpleNamespace(use_prev_mask=True, interactive=True, prev_image=False)
        self.inputs = SimpleNamespace(default_radius_px=2.0, alpha=None)
        self.calls = 0

    def prepare(self, image_hu):
        return torch.from_numpy(np.asarray(image_hu, np.float32))

    def predict_prepared(self, images, shapes, clicks, prev_masks):
        from scipy import ndimage

        out = []
        for img, cl, prev in zip(images, clicks, prev_masks):
            self.calls += 1
            obj = img.numpy() > 0
            seed = np.zeros_like(obj) if prev is None else np.asarray(prev, bool)
            yy, xx = np.mgrid[: obj.shape[0], : obj.shape[1]]
            for c in cl:
                disk = (yy - c.y) ** 2 + (xx - c.x) ** 2 <= 9
                seed = seed | disk if c.positive else seed
            cc, _ = ndimage.label(obj)
            keep = np.unique(cc[seed & obj])
            m = np.isin(cc, keep[keep > 0])
            for c in cl:
                if not c.positive:
                    m &= (yy - c.y) ** 2 + (xx - c.x) ** 2 > 16
            out.append(m.astype(np.float32))
        return out


def test_session_without_the_previous_mask_predicts_from_the_clicks_alone():
    """Session(prev_mask=False) (benchmark --no-prev-mask): the model is never shown the mask so
    far, so a part of it that no click supports (here: a second object in the starting mask)
    goes; by default the mask so far is shown and the part stays."""
    img = np.full((40, 60), -100.0, np.float32)
    img[10:30, 5:25] = 60.0  # object A
    img[10:30, 35:55] = 60.0  # object B
    start = img > 0
    seen = {}
    for keep in (True, False):
        pred = OraclePredictor()
        orig = pred.predict_prepared
        pred.predict_prepared = lambda images, shapes, clicks, prevs: seen.setdefault(keep, []).append(prevs) or orig(images, shapes, clicks, prevs)
        s = Session(pred, img, ClickSize(2.0, None), initial_mask=start, prev_mask=keep)
        m = s.add_click(20, 15, True)  # on A
        assert m[20, 15] and m[20, 45] == keep  # B stays only with the previous mask
        s.add_click(2, 30, False)  # a background click away from both
        assert s.mask[20, 45] == keep
    assert all(p[0] is not None for p in seen[True]) and all(p[0] is None for p in seen[False])


def test_a_click_that_agrees_with_the_mask_is_drawn_inside_it():
    """Session.make_click and VolumeSession.add_click: a positive click inside the mask so far
    near its border is drawn no larger than its distance to the border (agreeing_radius_px); a
    correction keeps the dynamic size."""
    img = np.full((40, 60), -100.0, np.float32)
    img[10:30, 5:25] = 60.0
    s = Session(OraclePredictor(), img, ClickSize(5.0, 1 / 40))  # dynamic: 400 px → 10 px
    s.add_click(20, 15, True)
    assert s.mask.sum() == 400 and s.next_radius_px == 10.0
    assert s.make_click(12, 15, True).radius_px == 3.0  # inside, 3 px from the top border's outside row
    assert s.make_click(20, 40, True).radius_px == 10.0  # outside: a correction
    assert s.make_click(6, 15, False).radius_px == 4.0  # outside, 4 px above the mask
    vol = np.stack([img] * 3)
    v = VolumeSession(OraclePredictor(), vol, ClickSize(5.0, 1 / 40))
    v.add_click(1, 20, 15, True, propagate=False)
    v.add_click(1, 12, 15, True, propagate=False)
    assert [c.radius_px for _, c in v.clicks] == [5.0, 3.0]


def _cylinder_volume(z0=5, z1=15, nz=24, size=40):
    vol = np.full((nz, size, size), -100.0, np.float32)
    gt = np.zeros(vol.shape, bool)
    yy, xx = np.mgrid[:size, :size]
    for z in range(z0, z1):
        gt[z] = (yy - 20) ** 2 + (xx - 20) ** 2 <= 64
    vol[gt] = 60.0
    return vol, gt


def test_volume_propagation_stops_where_the_object_ends():
    vol, gt = _cylinder_volume()
    vs = VolumeSession(OraclePredictor(), vol, spacing_mm=(2.0, 1.0, 1.0))
    m = vs.add_click(9, 20, 20, True)
    assert vs.slices_with_mask() == list(range(5, 15))  # not one slice more
    np.testing.assert_array_equal(m, gt)
    assert vs.volume_ml() == pytest.approx(gt.sum() * 2.0 / 1000)


def test_volume_correction_changes_only_slices_that_need_it_and_undo_is_exact():
    vol, gt = _cylinder_volume()
    pred = OraclePredictor()
    vs = VolumeSession(pred, vol)
    vs.add_click(9, 20, 20, True)
    before = vs.mask.copy()
    calls = pred.calls
    vs.add_click(12, 20, 20, False)  # carve a hole on slice 12 only
    assert vs.last_changed == [12]
    assert not vs.mask[12, 20, 20] and (vs.mask[[11, 13]] == before[[11, 13]]).all()
    assert pred.calls - calls <= 3  # the click, then one step each way that finds nothing changed
    assert vs.undo()
    np.testing.assert_array_equal(vs.mask, before)
    assert len(vs.clicks) == 1
    assert vs.clear() and not vs.mask.any() and vs.clicks == ()
    assert vs.undo()
    np.testing.assert_array_equal(vs.mask, before)


def test_volume_set_mask_is_a_starting_point_for_clicks_and_undo_is_exact():
    """set_mask: a segmentation made elsewhere becomes the 3D mask as it is (nothing predicted),
    the clicks that made the old mask are forgotten, a click then corrects it with the loaded
    mask as the previous mask, and undo goes back through both steps exactly."""
    vol, gt = _cylinder_volume()
    pred = OraclePredictor()
    vs = VolumeSession(pred, vol)
    vs.add_click(9, 20, 20, True)
    before, calls = vs.mask.copy(), pred.calls
    loaded = gt.copy()
    loaded[5:8] = False  # another tool's mask: three slices short at the bottom
    loaded[12, 0:3, 0:3] = True  # and a stray speck
    m = vs.set_mask(loaded.astype(np.uint8))
    np.testing.assert_array_equal(m, loaded)
    assert pred.calls == calls and vs.clicks == () and vs.last_changed == [5, 6, 7, 12]
    vs.add_click(12, 1, 1, False)  # remove the speck: the rest of the loaded mask stays
    assert not vs.mask[12, :3, :3].any() and vs.mask[12].sum() == gt[12].sum() and not vs.mask[5:8].any()
    assert vs.undo()
    np.testing.assert_array_equal(vs.mask, loaded)
    assert vs.undo()
    np.testing.assert_array_equal(vs.mask, before)
    assert len(vs.clicks) == 1
    with pytest.raises(ValueError, match="does not match the volume"):
        vs.set_mask(loaded[1:])
    with pytest.raises(ValueError, match="threshold probabilities"):
        vs.set_mask(loaded * 0.5)


def test_volume_propagation_clears_what_lies_beyond_a_new_end():
    vol, gt = _cylinder_volume()
    vs = VolumeSession(OraclePredictor(), vol)
    vs.add_click(9, 20, 20, True)
    vs.set_slice_mask(12, np.zeros((40, 40), bool))  # the structure ends before slice 12
    # beyond it, what came from slice 9 is cleared; towards the clicked slice 9 nothing changes
    assert vs.slices_with_mask() == list(range(5, 12))
    assert vs.last_changed == [12, 13, 14]
    assert vs.undo() and vs.slices_with_mask() == list(range(5, 15))


class LosingOraclePredictor(OraclePredictor):
    """The oracle, except that carrying a mask (no click) onto a slice whose pixel (0, 0) is 999
    HU finds nothing there: a model that loses the structure on one slice."""

    def predict_prepared(self, images, shapes, clicks, prev_masks):
        out = super().predict_prepared(images, shapes, clicks, prev_masks)
        return [np.zeros_like(o) if not cl and float(img[0, 0]) == 999.0 else o for o, img, cl in zip(out, images, clicks)]


def test_propagation_that_loses_the_structure_keeps_masks_that_lead_to_a_clicked_slice():
    vol, gt = _cylinder_volume()
    vol[10, 0, 0] = 999.0  # the model loses the cylinder on slice 10
    vs = VolumeSession(LosingOraclePredictor(), vol, small_carry=False)  # (not looked for again: below)
    vs.add_click(6, 20, 20, True)
    assert vs.slices_with_mask() == [5, 6, 7, 8, 9]  # lost at slice 10
    vs.add_click(13, 20, 20, True)
    # from slice 13 the carried mask is lost at 10 again; slices 7-9 come from the clicked
    # slice 6 (the structure is there), so they stay instead of being cleared as "beyond the end"
    assert vs.slices_with_mask() == [5, 6, 7, 8, 9, 11, 12, 13, 14]
    assert vs.last_changed == [11, 12, 13, 14]


def test_a_small_structure_the_model_loses_is_looked_for_again_with_a_click():
    """small_carry: a small carried mask that comes out empty gets a positive click at its
    deepest point; what that finds is kept only if it overlaps the carried mask, and a large
    structure's empty answer is taken as its end."""
    vol, gt = _cylinder_volume()
    vol[10, 0, 0] = 999.0  # the model loses the cylinder on slice 10 when it carries a mask there
    vs = VolumeSession(LosingOraclePredictor(), vol)
    vs.add_click(6, 20, 20, True)
    np.testing.assert_array_equal(vs.mask, gt)  # found again on slice 10, and stopped where it ends
    large = LosingOraclePredictor()
    large.inputs.grid_px = 400  # the same disc seen 10 × larger on the model's grid: not small
    vs = VolumeSession(large, vol)
    vs.add_click(6, 20, 20, True)
    assert vs.slices_with_mask() == [5, 6, 7, 8, 9]
    yy, xx = np.mgrid[:40, :40]
    vol[10][(yy - 20) ** 2 + (xx - 20) ** 2 <= 16 ** 2] = 60.0  # on slice 10 a much larger object
    vs = VolumeSession(LosingOraclePredictor(), vol)
    vs.add_click(6, 20, 20, True)
    assert vs.slices_with_mask() == [5, 6, 7, 8, 9]  # the click finds it, but it is not the carried disc


def test_propagation_refreshes_a_clicked_slice_it_reaches_and_goes_on():
    vol, gt = _cylinder_volume()
    vol[8, :, 20] = -100.0  # on slice 8 a dark line splits the cylinder into halves A and B
    half_a = gt[8] & (np.arange(40)[None, :] < 20)
    results = {}
    for refresh in (False, True):
        vs = VolumeSession(OraclePredictor(), vol, refresh_anchors=refresh)
        vs.add_click(8, 20, 15, True)  # on half A: slice 8 gets A only
        np.testing.assert_array_equal(vs.mask[8], half_a)
        assert vs.slices_with_mask() == list(range(5, 15))  # the neighbours touch A: whole discs
        before = vs.mask.copy()
        vs.propagate_from(11)  # recompute from slice 11 outwards: it reaches the clicked slice 8
        results[refresh] = vs.mask[8].copy()
        if refresh:
            assert 8 in vs.last_changed
            assert vs.undo()
            np.testing.assert_array_equal(vs.mask, before)  # undo restores the clicked slice too
    np.testing.assert_array_equal(results[False], half_a)  # off: the clicked slice keeps A
    # on: predicted again from its own click with the whole disc of slice 9 as the previous
    # mask, it gets both halves (the click still holds: it lies inside)
    np.testing.assert_array_equal(results[True], gt[8] & (vol[8] > 0))


def test_propagation_stops_when_the_mask_drifts_away_from_the_clicked_structures_intensity():
    vol, gt = _cylinder_volume()
    for z in range(5, 15):
        vol[z][gt[z]] = 60.0 + 20.0 * (z - 5)  # 20 HU more per slice: each step looks alike
    vs = VolumeSession(OraclePredictor(), vol)
    vs.add_click(5, 20, 20, True)
    # slice to slice the shift (20 HU) is under HU_SHIFT_MIN, but from the clicked slice's
    # 60 HU, slice 7 (100 HU) is another tissue: propagation ends there
    assert vs.slices_with_mask() == [5, 6]
    from iunet.inference import accept_propagated

    prob = gt[7].astype(np.float32)
    assert accept_propagated(prob, gt[6], image_hu=vol[7], prev_hu=vol[6]).any()  # the neighbour alone lets it pass
    assert not accept_propagated(prob, gt[6], image_hu=vol[7], prev_hu=vol[6], ref_hu=vol[5][gt[5]]).any()


class TissueOraclePredictor(OraclePredictor):
    """The oracle, except that a negative click rules out the whole tissue under it (every pixel
    of the clicked HU): a model that learnt "not this organ" from a background click."""

    def predict_prepared(self, images, shapes, clicks, prev_masks):
        out = super().predict_prepared(images, shapes, clicks, prev_masks)
        for o, img, cl in zip(out, images, clicks):
            for c in cl:
                if not c.positive:
                    o[img.numpy() == float(img[c.y, c.x])] = 0.0
        return out


def test_background_clicks_go_on_with_the_propagation_as_far_as_asked():
    """carry_negative_mm: a touching organ of another HU joins the propagated mask on every
    slice; a background click on it on slice 9 corrects that slice, and the re-propagation
    carries the click to the slices within reach (where the carried mask leaves its point out)."""
    vol, gt = _cylinder_volume()
    yy, xx = np.mgrid[:40, :40]
    organ = (yy - 20) ** 2 + (xx - 31) ** 2 <= 16  # touches the disc (centre 20, 20; radius 8)
    for z in range(5, 15):
        vol[z][organ & ~gt[z]] = 130.0
    wrong = gt.copy()
    wrong[5:15] |= organ[None]
    runs = {}
    for mm in (0.0, 4.0, 100.0):
        vs = VolumeSession(TissueOraclePredictor(), vol, spacing_mm=(2.0, 1.0, 1.0), carry_negative_mm=mm)
        vs.add_click(9, 20, 20, True)
        np.testing.assert_array_equal(vs.mask, wrong)  # the organ joins the disc wherever they touch
        vs.add_click(9, 20, 33, False)
        runs[mm] = vs.mask.copy()
        assert vs.undo()
        np.testing.assert_array_equal(vs.mask, wrong)
    right = [z for z in range(24) if np.array_equal(runs[0.0][z], gt[z])]
    assert right == sorted([z for z in range(24) if z < 5 or z >= 15] + [9])  # off: only the clicked slice
    right = [z for z in range(5, 15) if np.array_equal(runs[4.0][z], gt[z])]
    assert right == [7, 8, 9, 10, 11]  # within 4 mm (2 slices) of the click
    np.testing.assert_array_equal(runs[100.0], gt)


def test_a_carried_background_click_stops_where_its_point_is_on_other_tissue():
    """The touching organ (130 HU) is on slices 5-10 only; from slice 11 on the disc itself
    (60 HU) widens over the background click's point. There the click is not carried: its
    tissue is no longer the one it was made on, and the (tissue-removing) model would else
    take away the disc itself."""
    vol, gt = _cylinder_volume()
    yy, xx = np.mgrid[:40, :40]
    organ = (yy - 20) ** 2 + (xx - 31) ** 2 <= 16
    wide = (yy - 20) ** 2 + (xx - 24) ** 2 <= 144  # the disc widened, over the click's point (20, 33)
    for z in range(5, 11):
        vol[z][organ & ~gt[z]] = 130.0
    for z in range(11, 15):
        vol[z][wide] = 60.0
        gt[z] = wide
    # (small_carry off: it would find the disc again with a foreground click of its own)
    vs = VolumeSession(TissueOraclePredictor(), vol, spacing_mm=(2.0, 1.0, 1.0), carry_negative_mm=100.0, small_carry=False)
    vs.add_click(9, 20, 20, True)
    assert vs.mask[9, 20, 33] and vs.mask[12, 20, 33]
    vs.add_click(9, 20, 33, False)
    np.testing.assert_array_equal(vs.mask, gt)  # the organ gone everywhere, the wide disc kept


def test_a_re_propagation_does_not_carry_a_spill_into_other_tissue():
    """regrow_limit: a correction on slice 9 whose click also takes in a larger organ of another
    HU beside the disc (a spill the user will correct there) is not carried to the other slices,
    where the disc's masks are kept; with the guard off the organ joins every slice it lies on."""
    vol, gt = _cylinder_volume()
    organ = np.zeros(vol.shape[1:], bool)
    organ[4:37, 30:40] = True  # one pixel of fat from the disc's edge (x = 28)
    vol[5:15][:, organ] = 130.0
    masks = {}
    for limit in (0.0, 2.0):
        vs = VolumeSession(OraclePredictor(), vol, spacing_mm=(2.0, 1.0, 1.0), regrow_limit=limit)
        vs.add_click(9, 20, 20, True)
        np.testing.assert_array_equal(vs.mask, gt)
        vs.add_click(9, 20, 27, True)  # the model takes in the organ across the gap on slice 9
        assert vs.mask[9][organ].all()
        masks[limit] = vs.mask.copy()
        assert vs.undo()
        np.testing.assert_array_equal(vs.mask, gt)
    assert [z for z in range(24) if masks[0.0][z][organ].any()] == list(range(5, 15))
    assert [z for z in range(24) if masks[2.0][z][organ].any()] == [9]
    np.testing.assert_array_equal(np.delete(masks[2.0], 9, axis=0), np.delete(gt, 9, axis=0))


class SeedTissuePredictor(OraclePredictor):
    """A model that segments by tissue: the pixels within 25 HU of a seed's HU (the previous
    mask's pixels, positive clicks' centres), connected to the seeds."""

    def predict_prepared(self, images, shapes, clicks, prev_masks):
        from scipy import ndimage

        out = []
        for img, cl, prev in zip(images, clicks, prev_masks):
            im = img.numpy()
            seed = np.zeros(im.shape, bool) if prev is None else np.asarray(prev, bool).copy()
            for c in cl:
                seed[c.y, c.x] |= c.positive
            tissue = np.zeros(im.shape, bool)
            for v in np.unique(im[seed]):
                tissue |= np.abs(im - v) <= 25
            cc, _ = ndimage.label(tissue)
            keep = np.unique(cc[seed & tissue])
            out.append(np.isin(cc, keep[keep > 0]).astype(np.float32))
        return out


def test_a_re_propagation_grows_into_the_tissue_the_user_clicked():
    """regrow_limit spares the tissue under the correcting click: a first click in a kidney's
    sinus (40 HU) gives the sinus on every slice; a click on its cortex (150 HU) on slice 9 grows
    every slice's mask fourfold into the cortex, which is what the user pointed at."""
    vol, gt = _cylinder_volume()
    yy, xx = np.mgrid[:40, :40]
    sinus = (yy - 20) ** 2 + (xx - 20) ** 2 <= 16
    vol[5:15] = np.where(gt[5:15], 150.0, vol[5:15])
    vol[5:15][:, sinus] = 40.0
    vs = VolumeSession(SeedTissuePredictor(), vol, spacing_mm=(2.0, 1.0, 1.0))
    vs.add_click(9, 20, 20, True)
    np.testing.assert_array_equal(vs.mask[5:15], np.broadcast_to(sinus, (10, 40, 40)))
    vs.add_click(9, 20, 26, True)
    np.testing.assert_array_equal(vs.mask, gt)
    # likewise a whole kidney set on a slice (drawn, or "Propagate through volume") is carried whole
    vs.undo()
    vs.set_slice_mask(9, gt[9])
    np.testing.assert_array_equal(vs.mask, gt)


def test_a_foreground_click_beyond_the_masks_does_not_cut_the_fuller_ones_it_reaches():
    """shrink_limit: masks on slices 5-14 (opened, or from earlier clicks), the structure goes on
    to slice 17; a foreground click on slice 16 finds only a third of it there (another HU) and its
    run reaches slice 14 with that third. The fuller masks stay (the run stops there) and slices
    15-17 get the third; without the rule the third replaces every mask down to slice 5."""
    vol, gt = _cylinder_volume(z0=5, z1=18)
    yy, xx = np.mgrid[:40, :40]
    third = gt[9] & (xx < 17)
    vol[gt] = 150.0
    vol[5:18][:, third] = 60.0
    start = gt.copy()
    start[15:] = False
    out = {}
    for keep in (True, False):
        vs = VolumeSession(SeedTissuePredictor(), vol, spacing_mm=(2.0, 1.0, 1.0), shrink_limit=0.5 if keep else 0.0)
        vs.set_mask(start)
        vs.add_click(16, 20, 14, True)
        np.testing.assert_array_equal(vs.mask[16], third)
        out[keep] = vs.mask.copy()
        assert vs.undo()
        np.testing.assert_array_equal(vs.mask, start)
    np.testing.assert_array_equal(out[True][:15], start[:15])
    np.testing.assert_array_equal(out[True][15:18], np.broadcast_to(third, (3, 40, 40)))
    np.testing.assert_array_equal(out[False][5:18], np.broadcast_to(third, (13, 40, 40)))
    assert not out[True][18:].any() and not out[False][:5].any()
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError, match="shrink_limit must be a fraction"):
            VolumeSession(SeedTissuePredictor(), vol, shrink_limit=bad)


def test_volume_propagation_does_not_overwrite_clicked_slices():
    vol, gt = _cylinder_volume()
    vs = VolumeSession(OraclePredictor(), vol)
    vs.add_click(12, 20, 20, False, propagate=False)  # the user says: nothing here
    vs.add_click(9, 20, 20, True)
    # propagation from slice 9 stops at the slice the user emptied, which keeps its own (empty) mask
    assert vs.slices_with_mask() == list(range(5, 12))
    assert not vs.mask[12].any()


def _two_pieces(size=40):
    """A slice with two separate bright objects: A (disc r 5 at (12, 12)) and B (disc r 6 at (28, 28))."""
    yy, xx = np.mgrid[:size, :size]
    a = (yy - 12) ** 2 + (xx - 12) ** 2 <= 25
    b = (yy - 28) ** 2 + (xx - 28) ** 2 <= 36
    img = np.full((size, size), -100.0, np.float32)
    img[a | b] = 60.0
    return img, a, b


def test_clicked_piece_is_a_separate_piece_without_positive_clicks():
    from iunet.clicks import Click

    _, a, b = _two_pieces()
    prev = a | b
    pos, neg_b, neg_a = Click(12, 12, True, 3.0), Click(28, 28, False, 3.0), Click(12, 14, False, 3.0)
    np.testing.assert_array_equal(clicked_piece(prev, [pos, neg_b]), b)  # B holds no positive click
    assert clicked_piece(prev, [pos, neg_a]) is None  # A holds one: a correction inside the structure
    assert clicked_piece(prev, [neg_b]) is None  # no positive click: nothing says where the structure is
    assert clicked_piece(prev, [pos, Click(2, 2, False, 3.0)]) is None  # a click outside the mask
    assert clicked_piece(prev, [Click(28, 19, True, 3.0), neg_b]) is None  # a positive click within a radius of B
    # a slice predicted again: earlier background clicks count too, unless only the last one should
    assert clicked_piece(prev, [pos, neg_b, Click(5, 30, True, 3.0)]) is None
    np.testing.assert_array_equal(clicked_piece(prev, [pos, neg_b, Click(5, 30, True, 3.0)], last_only=False), b)


def test_background_click_on_a_separate_piece_removes_all_of_it():
    img, a, b = _two_pieces()
    s = Session(OraclePredictor(), img, initial_mask=a | b)  # a mask that wrongly includes B
    s.add_click(12, 12, True)
    np.testing.assert_array_equal(s.mask, a | b)
    s.add_click(28, 28, False)  # the oracle alone would leave a ring of B
    np.testing.assert_array_equal(s.mask, a)
    assert s.undo()
    s.add_click(12, 12, False)  # on A, which holds the positive click: only the model's disc goes
    assert s.mask[b].all() and s.mask[a].sum() < a.sum() and not s.mask[12, 12]
    # the same in a volume session, on a slice the user clicked on
    vs = VolumeSession(OraclePredictor(), img[None].repeat(3, 0))
    vs.add_click(1, 12, 12, True, propagate=False)
    vs.set_slice_mask(1, a | b, propagate=False)
    vs.add_click(1, 28, 28, False)
    np.testing.assert_array_equal(vs.mask[1], a)
    assert vs.slices_with_mask() == [0, 1, 2]  # propagated from the corrected slice
    np.testing.assert_array_equal(vs.mask[0], a)


def test_a_background_click_near_the_end_keeps_the_clicked_structures_intensity_as_reference():
    """A structure (60 HU) whose continuation brightens 25 HU a slice below slice 8 (a touching
    organ): propagation from a foreground click stops once the mask is 30 HU off the clicked
    slice's. A background click on the last slice (85 HU) re-propagates from there, and the
    reference stays the clicked slice's intensity, not that slice's own."""
    vol, _ = _cylinder_volume(z0=0, z1=20)
    for z, hu in zip(range(7, -1, -1), (85.0, 110.0, 135.0, 150.0, 150.0, 150.0, 150.0, 150.0)):
        vol[z][vol[z] > 0] = hu
    vs = VolumeSession(OraclePredictor(), vol)
    vs.add_click(14, 20, 20, True)
    assert vs.slices_with_mask() == list(range(7, 20))  # 110 HU on slice 6 is 50 off: stop
    vs.add_click(7, 20, 27, False)  # a background click at the edge of the last slice
    assert vs.slices_with_mask() == list(range(7, 20))  # not carried on from slice 7's own 85 HU


def test_the_structures_intensity_pools_every_positively_clicked_slice():
    """A structure at 200 HU on slices 9-19 whose end slice 8 mixes it with a touching organ
    (a ramp 110-200 HU, as a kidney's tip beside the liver), the organ (110 HU) on slices 0-7, one
    bright object throughout. A positive click on the end slice makes that slice the nearest
    reference, which tolerates 110 HU; the pooled masks of both clicked slices do not: the mask
    stays off the organ."""
    vol, _ = _cylinder_volume(z0=0, z1=20)
    obj = vol[0] > 0
    xx = np.mgrid[: obj.shape[0], : obj.shape[1]][1]
    for z in range(20):
        vol[z][obj] = 200.0 if z >= 9 else 110.0
    ramp = 110.0 + 90.0 * (xx - xx[obj].min()) / (xx[obj].max() - xx[obj].min())
    vol[8][obj] = ramp[obj]
    vs = VolumeSession(OraclePredictor(), vol)
    vs.add_click(14, 20, 20, True)
    assert vs.slices_with_mask() == list(range(9, 20))  # the ramp's median is 45 HU off: stop
    from iunet.inference import accept_propagated

    prob = obj.astype(np.float32)
    # the end slice alone lets the organ through (its mask's spread tolerates 110 HU) ...
    assert accept_propagated(prob, obj, image_hu=vol[7], prev_hu=vol[8], ref_hu=vol[8][obj]).any()
    vs.add_click(8, 20, 26, True)  # the user adds the end slice
    assert vs.slices_with_mask() == list(range(8, 20))  # ... the pooled reference does not
    assert not vs.mask[:8].any()


def test_accept_propagated_refuses_jumps_and_low_confidence():
    prev = np.zeros((40, 40), bool)
    prev[5:12, 5:12] = True
    prob = np.zeros((40, 40), np.float32)
    prob[6:12, 6:12] = 0.9  # the structure, continued
    prob[28:36, 28:36] = 0.9  # another structure far away
    m = accept_propagated(prob, prev)
    assert m[8, 8] and not m[30, 30]
    prob[6:12, 6:12] = 0.55  # barely over the threshold: not confident, the structure ends
    assert not accept_propagated(prob, prev).any()


def test_volume_click_outside_is_refused(predictor):
    vs = VolumeSession(predictor, np.zeros((3, 32, 32), np.float32))
    with pytest.raises(ValueError, match="outside the volume"):
        vs.add_click(3, 5, 5, True)
    assert vs.clicks == () and not vs.can_undo


def test_accept_propagated_stops_at_another_tissue():
    prev = np.zeros((40, 40), bool)
    prev[5:15, 5:15] = True
    prob = np.where(prev, 0.95, 0.0).astype(np.float32)
    rng = np.random.default_rng(0)
    spleen = (120 + 10 * rng.standard_normal((40, 40))).astype(np.float32)
    assert accept_propagated(prob, prev, image_hu=spleen + 5, prev_hu=spleen).any()  # same tissue
    lung = (-800 + 10 * rng.standard_normal((40, 40))).astype(np.float32)
    assert not accept_propagated(prob, prev, image_hu=lung, prev_hu=spleen).any()
    bowel = (40 + 10 * rng.standard_normal((40, 40))).astype(np.float32)
    assert not accept_propagated(prob, prev, image_hu=bowel, prev_hu=spleen).any()


def test_explicit_propagation_extends_a_run_cut_short_and_counts_its_memory():
    vol, gt = _cylinder_volume()
    vs = VolumeSession(OraclePredictor(), vol, max_slices=2)
    vs.add_click(9, 20, 20, True)
    assert vs.slices_with_mask() == list(range(7, 12))  # two slices each way
    vs.propagate_from(9, max_slices=30)  # the early stop must not end this at slice 10
    assert vs.slices_with_mask() == list(range(5, 15))
    assert vs.nbytes >= vs.mask.nbytes


def _shipped_agnostic3d():
    """Path of the shipped ``iunet_agnostic3d`` weights (the app's default); skip without them."""
    from pathlib import Path

    weights = Path(__file__).resolve().parents[1] / "weights" / "iunet_agnostic3d.safetensors"
    if not weights.is_file():
        pytest.skip("weights/iunet_agnostic3d.safetensors is absent")
    return weights


def _readme_rectangle() -> tuple[np.ndarray, np.ndarray]:
    """Issue 9's README example: a uniform 60 × 80 px rectangle of 60 HU on -100 HU (256², HU) and its mask."""
    img = np.full((256, 256), -100, np.float32)
    img[100:160, 90:170] = 60
    return img, img > 0


def test_shipped_propagation_model_stops_where_a_synthetic_object_ends():
    """The real model and the real engine: one click in the middle of an ellipsoid of soft tissue
    (11 of 24 slices) gives a mask on those slices only, not on every slice, inside the object
    and covering most of it."""
    weights = _shipped_agnostic3d()
    rng = np.random.default_rng(0)
    nz, n = 24, 128
    vol = (-100 + 15 * rng.standard_normal((nz, n, n))).astype(np.float32)
    yy, xx = np.mgrid[:n, :n]
    gt = np.zeros(vol.shape, bool)
    for z in range(6, 17):
        r = 22 - abs(z - 11) * 1.5
        gt[z] = (yy - 64) ** 2 + (xx - 60) ** 2 / 1.5 <= r * r
    vol[gt] = 60 + 10 * rng.standard_normal(int(gt.sum()))
    vs = VolumeSession(Predictor(weights, device="cpu"), vol)
    m = vs.add_click(11, 64, 60, True)
    z = vs.slices_with_mask()
    assert 5 <= z[0] <= 7 and 15 <= z[-1] <= 17  # within one slice of where the object ends
    assert (m & gt).sum() / m.sum() > 0.95  # no leak into the background
    assert 2 * (m & gt).sum() / (m.sum() + gt.sum()) > 0.8


def test_geodesic_maps_of_the_predictor_match_the_library_and_stay_bounded():
    """The Predictor's cached distances give exactly ``geodesic_maps`` (the maps training saw),
    click after click (one Dijkstra run per new click, however many came before), after an undo,
    on several slices, and the cache keeps at most its bound of slices."""
    import iunet.inference as inference
    from iunet.clicks import Click, geodesic_maps
    from iunet.inference import Predictor
    from iunet.model import Checkpoint, InputConfig, ModelConfig, UNet

    mc = ModelConfig(base_channels=4, depth=2, use_prev_mask=True, geodesic=True)
    pred = Predictor(Checkpoint(UNet(mc), mc, InputConfig(grid_px=64)), device="cpu")
    pred.GEO_CACHE_SLICES = 2
    runs = []
    real = inference.geodesic_distance

    def counted(cost, points):
        runs.append(len(points))
        return real(cost, points)

    inference.geodesic_distance = counted
    try:
        rng = np.random.default_rng(0)
        slices = []
        for _ in range(3):
            hu = rng.normal(0, 20, (96, 80)).astype(np.float32)
            hu[20:60, 10:50] += 150.0
            slices.append((hu, pred.prepare(hu)))
        yy, xx = rng.integers(0, 96, 25), rng.integers(0, 80, 25)
        clicks = [Click(int(y), int(x), k % 3 != 1) for k, (y, x) in enumerate(zip(yy, xx))]

        def check(hu, grid, cl):
            grid_clicks = [c.scaled(64 / 96, 64 / 80) for c in cl]
            got = pred._geodesic(grid, grid_clicks).numpy()
            want = geodesic_maps(grid[0].numpy(), grid_clicks, pred.inputs.geodesic_lambda, pred.inputs.geodesic_tau_px,
                                 noise_ref=pred.inputs.geodesic_noise_ref)
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)

        hu, grid = slices[0]
        for k in range(1, len(clicks) + 1):  # 25 clicks on one slice: one run per new click
            runs.clear()
            check(hu, grid, clicks[:k])
            assert len(runs) == 1, (k, runs)
        check(hu, grid, clicks[:10])  # an undo back to 10 clicks: computed afresh
        for hu, grid in slices[1:]:
            for k in (1, 2, 5):
                check(hu, grid, clicks[:k])
    finally:
        inference.geodesic_distance = real
    assert len(pred._geo_cache) <= 2
    assert pred.build_inputs([slices[0][1]], [slices[0][0].shape], [clicks[:2]]).shape == (1, 6, 64, 64)


def test_shipped_default_model_fills_the_readme_rectangle_with_one_click():
    """Issue 9's README example: one click in the centre of a uniform 60 × 80 px rectangle
    (60 HU on −100 HU) captures it (Dice ≥ 0.95) with the app's default model."""
    from iunet.inference import Predictor, Session

    weights = _shipped_agnostic3d()
    img, gt = _readme_rectangle()
    m = Session(Predictor(weights, device="cpu"), img).add_click(130, 130, True)
    assert 2 * (m & gt).sum() / (m.sum() + gt.sum()) >= 0.95


def test_one_click_fills_the_rectangle_of_a_noisy_scan_too():
    """The same rectangle under 40 HU of pixel noise (a low-dose scan): the geodesic maps come
    from a smoother copy of the image, so one click still fills it; drawn from the 1 px blur
    (``geodesic_noise_ref`` 0, as before 2026-11-28) the noise reads as edges and the mask is a
    fraction of it."""
    from dataclasses import replace
    from iunet.inference import Predictor, Session

    weights = _shipped_agnostic3d()
    img, gt = _readme_rectangle()
    img += 40.0 * np.random.default_rng(0).standard_normal(img.shape).astype(np.float32)
    pred = Predictor(weights, device="cpu")
    assert pred.inputs.geodesic_noise_ref > 0  # version 5 carries none: the default
    dices = []
    for ref in (pred.inputs.geodesic_noise_ref, 0.0):
        pred.inputs = replace(pred.inputs, geodesic_noise_ref=ref)
        m = Session(pred, img).add_click(130, 130, True)
        dices.append(2 * (m & gt).sum() / (m.sum() + gt.sum()))
    assert dices[0] >= 0.95 and dices[1] < 0.6


def test_zoom_in_predicts_on_a_crop_around_the_object():
    """ZoomIn: the first click sees the whole slice; later clicks see a square crop around the
    current mask and the clicks (in the crop's pixels, clicks outside it dropped), and the
    prediction is pasted back, empty outside the crop."""
    from iunet.clicks import Click
    from iunet.inference import ZoomIn

    class Recorder(OraclePredictor):
        def __init__(self):
            super().__init__()
            self.seen = []

        def predict_prepared(self, images, shapes, clicks, prev_masks):
            self.seen.append((tuple(shapes[0]), tuple(clicks[0])))
            return super().predict_prepared(images, shapes, clicks, prev_masks)

    img = np.full((120, 120), -100.0, np.float32)
    img[50:62, 40:56] = 60.0  # a small object
    img[5:15, 100:115] = 60.0  # another, far away
    pred = Recorder()
    s = Session(pred, img, ClickSize(3.0, None), zoom=ZoomIn())
    s.add_click(55, 47, True)
    assert pred.seen[-1][0] == (120, 120)  # first click: the whole slice
    s.add_click(8, 108, False)  # a background click far away
    shape, clicks = pred.seen[-1]
    assert shape[0] == shape[1] and shape[0] < 120 and len(clicks) == 2  # ... a crop that holds the last click
    s.add_click(56, 48, True)
    shape, clicks = pred.seen[-1]
    assert shape[0] == 40 and len(clicks) == 2  # the side is at least 120 / 3; the far click dropped
    gt = img > 0
    gt[:20] = False
    assert (s.mask == gt).all()  # pasted back at the right place, nothing outside the crop
    z = ZoomIn()
    m = np.zeros((100, 100), bool)
    m[10:90, 10:90] = True
    assert z.crop(m, [Click(50, 50, True), Click(20, 20, True)], (100, 100)) is None  # too large to zoom
    assert z.crop(m, [Click(50, 50, True)], (100, 100)) is None  # the first click never zooms


class ShortSightedPredictor(OraclePredictor):
    """A stand-in for a model with a limited field of view: it sees the slice on a 32-px grid
    and segments the bright object only within 6 grid px of a positive click. Zoomed out, it
    sees the slice shrunk on a smaller grid, so the same 6 grid px reach further in the slice.
    It keeps a previous mask it is given."""

    GRID, REACH = 32, 6

    def prepare(self, image_hu):
        img = np.asarray(image_hu, np.float32)
        f = img.shape[0] // self.GRID
        return torch.from_numpy(img[::f, ::f].copy())

    def prepare_zoomed_out(self, image, factor, margin_px):
        step = int(factor)
        small = image[::step, ::step]
        n = small.shape[0] + 2 * margin_px
        view = torch.full((n, n), -1000.0)
        view[margin_px : n - margin_px, margin_px : n - margin_px] = small
        return view, (margin_px, n - margin_px, margin_px, n - margin_px)

    def _view(self, img, shape, box):
        """One prediction's grid: its size n, the box (y0, y1, x0, x1) the slice fills on it, and
        the slice pixels per grid pixel; counts the call."""
        self.calls += 1
        n = img.shape[0]
        y0, y1, x0, x1 = (0, n, 0, n) if box is None else box
        return n, (y0, y1, x0, x1), shape[0] // (y1 - y0)

    def predict_prepared(self, images, shapes, clicks, prev_masks=None, boxes=None):
        out = []
        for i, (img, shape, cl) in enumerate(zip(images, shapes, clicks)):
            n, (y0, y1, x0, x1), f = self._view(img, shape, None if boxes is None else boxes[i])
            yy, xx = np.mgrid[:n, :n]
            m = np.zeros((n, n), bool)
            for c in cl:
                if c.positive:
                    m |= (yy - (y0 + c.y // f)) ** 2 + (xx - (x0 + c.x // f)) ** 2 <= self.REACH**2
            r = np.kron((m & (img.numpy() > 0))[y0:y1, x0:x1], np.ones((f, f))).astype(np.float32)
            if prev_masks is not None and prev_masks[i] is not None:
                r = np.maximum(r, np.asarray(prev_masks[i], np.float32))
            out.append(r)
        return out


def test_zoom_out_shows_a_large_structure_whole_and_leaves_small_ones():
    from iunet.inference import Session, ZoomOut

    img = np.full((64, 64), -100.0, np.float32)
    img[4:60, 4:44] = 60.0  # a large organ: 55 % of the slice
    img[50:56, 52:58] = 60.0  # a small lesion
    big = img > 0
    big[50:56, 52:58] = False
    pred = ShortSightedPredictor()
    plain = Session(pred, img).add_click(30, 24, True)
    wide = Session(pred, img, zoom_out=ZoomOut(refine=False)).add_click(30, 24, True)
    assert plain.sum() < 0.5 * big.sum() and not (wide & ~big).any() and wide.sum() > 2 * plain.sum()
    # the same in a volume's first click on a slice
    vs = VolumeSession(pred, img[None], zoom_out=ZoomOut(refine=False))
    np.testing.assert_array_equal(vs.add_click(0, 30, 24, True)[0], wide)
    # a small structure stays at the full view: the same mask, and no second prediction
    small = Session(pred, img, zoom_out=ZoomOut(refine=False))
    calls = pred.calls
    np.testing.assert_array_equal(small.add_click(52, 54, True), Session(pred, img).add_click(52, 54, True))
    assert pred.calls == calls + 2
    # later clicks are predicted as before (full view, with the previous mask)
    calls = pred.calls
    s = Session(pred, img, zoom_out=ZoomOut(refine=False))
    s.add_click(30, 24, True)
    s.add_click(10, 10, True)
    assert pred.calls == calls + 3  # full view, zoomed out; the later click
    # a large mask of a huge slice too (the view is made on the model's grid, not in the slice's pixels)
    huge = np.ones((3000, 3000), np.float32)
    assert ZoomOut().applies(huge, [Click(5, 5, True, 5.0)]) and not ZoomOut().applies(huge * 0, [Click(5, 5, True, 5.0)])
    assert ZoomOut().applies(huge[:20, :20], [Click(5, 5, False, 5.0)]) is False  # a background click: never


def test_zoomed_out_mask_is_refined_at_the_full_view():
    """ZoomOut(refine=True): the zoomed-out mask is predicted again at the full view with the click
    and itself as the previous mask, which adds what the coarse view missed (here the organ's
    top rows, lost to the zoomed-out view's sampling); refine=False keeps the coarse mask; a
    model without the previous-mask channel is not refined."""
    from iunet.inference import Session, ZoomOut

    img = np.full((64, 64), -100.0, np.float32)
    img[5:59, 5:43] = 60.0
    organ = img > 0
    pred = ShortSightedPredictor()
    calls = pred.calls
    coarse = Session(pred, img, zoom_out=ZoomOut(refine=False)).add_click(10, 24, True)
    assert pred.calls == calls + 2
    calls = pred.calls
    fine = Session(pred, img, zoom_out=ZoomOut(refine=True)).add_click(10, 24, True)
    assert pred.calls == calls + 3
    added = fine & ~coarse
    assert (fine >= coarse).all() and (added & organ).any() and not (added & ~organ).any()  # the organ's missed rows only
    np.testing.assert_array_equal(VolumeSession(pred, img[None], zoom_out=ZoomOut(refine=True)).add_click(0, 10, 24, True)[0], fine)
    pred.config.use_prev_mask = False
    calls = pred.calls
    np.testing.assert_array_equal(Session(pred, img, zoom_out=ZoomOut(refine=True)).add_click(10, 24, True), coarse)
    assert pred.calls == calls + 2
    assert ZoomOut().refine  # on by default


class CompletingPredictor(ShortSightedPredictor):
    """ShortSightedPredictor that, given a previous mask, completes it: the whole bright region
    of the slice ``image_hu`` (given at construction, in its own pixels) connected to it, as a
    model trained on partial previous masks does."""

    def __init__(self, image_hu):
        super().__init__()
        self.image_hu = np.asarray(image_hu)

    def predict_prepared(self, images, shapes, clicks, prev_masks=None, boxes=None):
        from scipy import ndimage

        out = super().predict_prepared(images, shapes, clicks, None, boxes)
        for i in range(len(images)):
            prev = None if prev_masks is None else prev_masks[i]
            if prev is not None and np.asarray(prev).any():
                lab, _ = ndimage.label(self.image_hu > 0)
                touched = np.unique(lab[np.asarray(prev, bool)])
                out[i] = np.isin(lab, touched[touched > 0]).astype(np.float32)
        return out


def test_first_click_is_refined_at_the_full_view():
    """ZoomOut(refine=True) also refines a first click kept at the full view: predicted again
    with the click and its own mask as the previous mask, where a model that completes partial
    masks takes the rest of a long thin structure that one click's reach left out. Off, or for a
    model without the previous-mask channel, the first mask stays, and so it does where the
    refinement would add another tissue; a Session and a VolumeSession agree; the user's "full"
    view is refined the same way."""
    from iunet.inference import Session, ZoomOut

    img = np.full((64, 64), -100.0, np.float32)
    img[30:34, 8:52] = 60.0  # a bar of 176 px: under ZoomOut's 4.5 % of the slice, so never zoomed out
    bar = img > 0
    pred = CompletingPredictor(img)
    calls = pred.calls
    plain = Session(pred, img, zoom_out=ZoomOut(refine=False)).add_click(31, 12, True)
    assert pred.calls == calls + 1 and 0 < plain.sum() < 0.7 * bar.sum() and not (plain & ~bar).any()
    calls = pred.calls
    fine = Session(pred, img, zoom_out=ZoomOut(refine=True)).add_click(31, 12, True)
    assert pred.calls == calls + 2
    np.testing.assert_array_equal(fine, bar)
    np.testing.assert_array_equal(VolumeSession(pred, img[None], zoom_out=ZoomOut(refine=True)).add_click(0, 31, 12, True)[0], bar)
    np.testing.assert_array_equal(ZoomOut(refine=True).view(pred, img, [Click(31, 12, True, 5.0)], "full") >= 0.5, bar)
    np.testing.assert_array_equal(ZoomOut(refine=False).view(pred, img, [Click(31, 12, True, 5.0)], "full") >= 0.5, plain)
    # nothing to refine from an empty first mask (a click off the structure)
    assert not Session(pred, img, zoom_out=ZoomOut(refine=True)).add_click(5, 5, True).any()
    # a refinement that would take in a touching tissue of another intensity is not kept
    touching = img.copy()
    touching[34:40, 30:52] = 150.0  # an organ 90 HU brighter against the bar's far half
    pred_t = CompletingPredictor(touching)
    np.testing.assert_array_equal(Session(pred_t, touching, zoom_out=ZoomOut(refine=True)).add_click(31, 12, True), plain)
    pred.config.use_prev_mask = False
    np.testing.assert_array_equal(Session(pred, img, zoom_out=ZoomOut(refine=True)).add_click(31, 12, True), plain)


class SinusPredictor(ShortSightedPredictor):
    """A stand-in for a model whose geodesic click maps stop at a fat's edge: at the full view it
    segments the connected region of the clicked grid pixel's tissue (fat, or the bright organ);
    zoomed out it sees the organ with its fat sinus as one (the bright object, holes filled).
    Like ShortSightedPredictor, it keeps a previous mask it is given."""

    def predict_prepared(self, images, shapes, clicks, prev_masks=None, boxes=None):
        from scipy import ndimage

        out = []
        for i, (img, shape, cl) in enumerate(zip(images, shapes, clicks)):
            _, (y0, y1, x0, x1), f = self._view(img, shape, None if boxes is None else boxes[i])
            a = img.numpy()[y0:y1, x0:x1]
            gy, gx = cl[0].y // f, cl[0].x // f
            if boxes is None:
                tissue = a > 0 if a[gy, gx] > 0 else (a < 0) & (a > -500)
            else:
                tissue = ndimage.binary_fill_holes(a > 0)
            lab, _ = ndimage.label(tissue)
            m = (lab == lab[gy, gx]) & tissue
            r = np.kron(m, np.ones((f, f))).astype(np.float32)
            if prev_masks is not None and prev_masks[i] is not None:
                r = np.maximum(r, np.asarray(prev_masks[i], np.float32))
            out.append(r)
        return out


def test_a_first_click_on_fat_inside_an_organ_gives_the_organ_seen_zoomed_out():
    """ZoomOut: a first click on fat (a renal sinus) whose full-view mask is the fat alone is
    predicted zoomed out, and the organ around it is kept (the zoomed-out mask holds the fat's
    mask, is over twice as large, and adds tissue that is not fat); a fat region with no organ
    around it, or a click on air, keeps the full view's mask (fat is read at the click's centre,
    so a sinus smaller than the click's disk counts); a click on the organ is predicted
    as before; ``fat_growth=0`` (the benchmark's --no-fat-zoom) never does it; the same in a
    volume's first click."""
    from iunet.inference import Session, ZoomOut

    img = np.full((128, 128), -1000.0, np.float32)
    yy, xx = np.mgrid[:128, :128]
    r2 = (yy - 64) ** 2 + (xx - 64) ** 2
    img[r2 <= 40**2] = 60.0  # the organ
    img[r2 <= 12**2] = -100.0  # its fat sinus
    organ = r2 <= 40**2
    pred = SinusPredictor()
    sinus = Session(pred, img, zoom_out=ZoomOut(fat_growth=0)).add_click(64, 64, True)
    assert 0 < sinus.sum() < 0.045 * img.size and not (sinus & (r2 > 18**2)).any()  # the full view: the fat alone (4-px grid)
    whole = Session(pred, img, zoom_out=ZoomOut()).add_click(64, 64, True)
    assert (whole & organ).sum() > 0.9 * organ.sum() and whole.sum() > 2 * sinus.sum()
    np.testing.assert_array_equal(VolumeSession(pred, img[None], zoom_out=ZoomOut()).add_click(0, 64, 64, True)[0], whole)
    counts = []
    for zo in (ZoomOut(), ZoomOut(fat_growth=0)):  # a click on the organ: as before (here zoomed out, the organ being large)
        calls = pred.calls
        counts.append((Session(pred, img, zoom_out=zo).add_click(64, 96, True), pred.calls - calls))
    np.testing.assert_array_equal(counts[0][0], counts[1][0])
    assert counts[0][1] == counts[1][1] == 3  # the full view, zoomed out, refined at the full view
    small = np.where(organ, 60.0, -1000.0).astype(np.float32)
    small[r2 <= 2**2] = -100.0  # a sinus smaller than the click's disk: its centre is read, not the disk
    assert (Session(pred, small, zoom_out=ZoomOut()).add_click(64, 64, True) & organ).sum() > 0.9 * organ.sum()
    assert Session(pred, small, zoom_out=ZoomOut(centre_radius_px=0)).add_click(64, 64, True).sum() < 0.1 * organ.sum()
    air = img.copy()
    air[r2 <= 12**2] = -1000.0  # an air pocket is not a sinus: the full view's (empty) mask stays
    np.testing.assert_array_equal(Session(pred, air, zoom_out=ZoomOut()).add_click(64, 64, True),
                                  Session(pred, air, zoom_out=ZoomOut(fat_growth=0)).add_click(64, 64, True))
    lone = np.full((128, 128), -1000.0, np.float32)
    lone[r2 <= 12**2] = -100.0  # a fat region in air: nothing around it to take
    np.testing.assert_array_equal(Session(pred, lone, zoom_out=ZoomOut()).add_click(64, 64, True),
                                  Session(pred, lone, zoom_out=ZoomOut(fat_growth=0)).add_click(64, 64, True))


def test_around_fat_keeps_a_zoomed_out_mask_only_around_the_click(monkeypatch):
    """ZoomOut.around_fat's geometry, with the zoomed-out prediction given: an organ around the
    clicked fat (a ring, the sinus left out as a kidney seen zoomed out leaves it) is kept; an
    organ beside the fat, however large, is not, nor one that adds only fat, nor one not over
    twice the fat's mask."""
    from iunet.inference import ZoomOut

    img = np.full((96, 96), -1000.0, np.float32)
    yy, xx = np.mgrid[:96, :96]
    r2 = (yy - 48) ** 2 + (xx - 48) ** 2
    ring = (r2 <= 30**2) & (r2 > 8**2)
    img[ring] = 60.0
    img[r2 <= 8**2] = -100.0  # the fat the click is on
    fat_mask = (r2 <= 8**2).astype(np.float32)
    click = [Click(48, 48, True, 5.0)]
    beside = np.zeros((96, 96), bool)
    beside[10:86, 80:94] = True  # an organ beside the fat
    img[beside & ~ring] = 60.0
    zo = ZoomOut()
    for wide, kept in ((ring, True), (beside, False), (ring & (r2 <= 9**2), False)):
        monkeypatch.setattr(ZoomOut, "predict", lambda self, *a, w=wide, **k: [w.astype(np.float32)])
        out = zo.around_fat(None, img, fat_mask, click)
        assert (out is not None) == kept
    fatty = np.where(r2 <= 30**2, -100.0, -1000.0).astype(np.float32)  # fat all round: nothing to take
    monkeypatch.setattr(ZoomOut, "predict", lambda self, *a, **k: [(r2 <= 30**2).astype(np.float32)])
    assert zo.around_fat(None, fatty, fat_mask, click) is None


class NearSightedPredictor(OraclePredictor):
    """Sees a faint lesion only when zoomed in: on the whole slice a click takes the organ
    around it (every pixel over 0 HU connected to the click), on any smaller view the lesion
    (0-90 HU). Records the shape of every view it is shown."""

    def __init__(self, slice_shape):
        super().__init__()
        self.slice_shape, self.views, self.neighbours = tuple(slice_shape), [], []

    def predict_prepared(self, images, shapes, clicks, prev_masks, boxes=None, prev_images=None):
        from scipy import ndimage

        out = []
        for i, (img, cl) in enumerate(zip(images, clicks)):
            a = img.numpy()
            self.views.append(a.shape)
            self.neighbours.append(None if prev_images is None or prev_images[i] is None else tuple(prev_images[i].shape))
            tissue = a > 0 if a.shape == self.slice_shape else (a > 0) & (a < 90)
            cc, _ = ndimage.label(tissue)
            seeds = [cc[c.y, c.x] for c in cl if c.positive and cc[c.y, c.x]]
            out.append(np.isin(cc, seeds).astype(np.float32))
        return out


def test_zoom_in_when_a_first_click_takes_in_tissue_of_another_intensity():
    """ZoomOut.zoom_in: a first click in a faint lesion whose mask is the organ around it (its
    median HU beyond the stop rule's tolerance of the click's) is predicted again zoomed in, and
    that mask kept; the slice's later clicks go on on a crop (ZoomIn); undo forgets it. A click
    in the organ itself, or a zoomed view that is no nearer the click's HU, changes nothing."""
    from iunet.inference import ZoomOut

    yy, xx = np.mgrid[:256, :256]
    img = np.full((256, 256), -100.0, np.float32)
    img[(yy - 128) ** 2 + (xx - 128) ** 2 <= 25**2] = 120.0  # an organ (3 % of the slice: not zoomed out)
    lesion = (yy - 128) ** 2 + (xx - 128) ** 2 <= 6**2
    img[lesion] = 60.0  # a faint lesion in it, 60 HU darker
    organ = img > 0
    pred = NearSightedPredictor(img.shape)
    np.testing.assert_array_equal(Session(pred, img).add_click(128, 128, True), organ)  # without: the organ
    s = Session(pred, img, zoom_out=ZoomOut())
    np.testing.assert_array_equal(s.add_click(128, 128, True), lesion)
    assert s.zoomed_in and pred.views[-1] == (85, 85)  # a third of the slice
    s.add_click(124, 128, True)
    assert pred.views[-1] != img.shape and s.mask[lesion].all() and not (s.mask & ~lesion).any()  # on a crop
    s.undo(), s.undo()
    assert not s.zoomed_in
    # a click in the organ: its mask has the clicked intensity, nothing is zoomed
    s = Session(pred, img, zoom_out=ZoomOut())
    np.testing.assert_array_equal(s.add_click(128, 110, True), organ)
    assert not s.zoomed_in
    # off: zoom_in_fraction 0
    np.testing.assert_array_equal(Session(pred, img, zoom_out=ZoomOut(zoom_in_fraction=0)).add_click(128, 128, True), organ)
    # not zoomed in: a click on fat (a renal sinus means the kidney around it), or a mask within
    # zoom_in_margin_hu of the stop rule's tolerance (45 HU here) of the click's intensity
    click = [Click(128, 128, True, 2.0)]
    assert ZoomOut().zoom_in(pred, img, organ.astype(np.float32), click) is not None
    for lesion_hu in (-100.0, 80.0):
        other = img.copy()
        other[lesion] = lesion_hu
        assert ZoomOut().zoom_in(pred, other, (other != -100).astype(np.float32), click) is None
    # the volume's first click on a slice likewise; its undo forgets the zoom
    vs = VolumeSession(pred, np.stack([img] * 3), zoom_out=ZoomOut())
    np.testing.assert_array_equal(vs.add_click(1, 128, 128, True, propagate=False)[1], lesion)
    vs.add_click(1, 124, 128, True, propagate=False)
    assert pred.views[-1] != img.shape and not (vs.mask[1] & ~lesion).any()
    assert vs._zoomed == {1}
    vs.undo(), vs.undo()
    assert not vs.mask.any() and not vs._zoomed
    np.testing.assert_array_equal(vs.add_click(1, 128, 110, True, propagate=False)[1], organ)
    # a zoomed slice that a propagation reaches is predicted again on a crop too (at the full
    # view its click would take the organ)
    vs = VolumeSession(pred, np.stack([img] * 3), zoom_out=ZoomOut())
    vs.add_click(1, 128, 128, True, propagate=False)
    n = len(pred.views)
    vs.add_click(0, 128, 128, True)  # slice 0's lesion, carried onto the clicked slice 1
    assert len(pred.views) > n and pred.views[-1] != img.shape and vs._zoomed == {0, 1}
    np.testing.assert_array_equal(vs.mask[1], lesion)
    assert pred.neighbours[-1] is None  # (a model without the neighbour's image)
    # a 2.5D model is shown the neighbour's image on that crop too
    pred.config.prev_image = True
    vs = VolumeSession(pred, np.stack([img] * 3), zoom_out=ZoomOut())
    vs.add_click(1, 128, 128, True, propagate=False)
    vs.add_click(0, 128, 128, True)
    assert pred.views[-1] != img.shape and pred.neighbours[-1] == pred.views[-1]


class FocusPredictor(OraclePredictor):
    """On the whole slice a foreground click takes every pixel over 0 HU connected to it (a
    click on a vessel branch takes the organ around it); on any smaller view only the tissue
    within 30 HU of the clicked pixel, connected to it. The previous mask is kept either way."""

    def __init__(self, slice_shape):
        super().__init__()
        self.slice_shape, self.views = tuple(slice_shape), []

    def predict_prepared(self, images, shapes, clicks, prev_masks, boxes=None, prev_images=None):
        from scipy import ndimage

        out = []
        for img, cl, prev in zip(images, clicks, prev_masks):
            a = img.numpy()
            self.views.append(a.shape)
            m = np.zeros(a.shape, bool) if prev is None else np.asarray(prev, bool).copy()
            for c in cl:
                if c.positive:
                    tissue = a > 0 if a.shape == self.slice_shape else np.abs(a - a[c.y, c.x]) <= 30
                    cc, _ = ndimage.label(tissue)
                    if cc[c.y, c.x]:
                        m |= cc == cc[c.y, c.x]
            out.append(m.astype(np.float32))
        return out


def test_focus_view_when_a_later_click_takes_in_other_tissue():
    """ZoomOut.focus: a click on a second vessel branch inside an organ takes the whole organ at
    the full view (over 4 × the mask, 100 HU from the vessel's); predicted again on a focus view
    around the click (a third of the slice) it adds the branch only, which is kept. A click
    whose focus view grows as much (a click on the organ itself after a mask on a small dark
    lesion) keeps the full prediction; focus_growth 0 turns it off; the volume's clicks too. A
    mask that already holds some of the organ is focused too: the organ is not the clicked
    branch's tissue."""
    from iunet.inference import ZoomOut

    yy, xx = np.mgrid[:256, :256]
    img = np.full((256, 256), -100.0, np.float32)
    img[(yy - 128) ** 2 + (xx - 128) ** 2 <= 70**2] = 100.0  # an organ
    branch_a = (yy - 100) ** 2 + (xx - 100) ** 2 <= 5**2
    branch_b = (yy - 160) ** 2 + (xx - 150) ** 2 <= 5**2
    img[branch_a | branch_b] = 200.0  # two vessel branches in it
    organ = img > 0
    pred = FocusPredictor(img.shape)
    s = Session(pred, img, zoom_out=ZoomOut(), initial_mask=branch_a)
    np.testing.assert_array_equal(s.add_click(160, 150, True), branch_a | branch_b)
    assert pred.views[-1] == (85, 85)  # the focus view
    s = Session(pred, img, zoom_out=ZoomOut(focus_growth=0), initial_mask=branch_a)
    np.testing.assert_array_equal(s.add_click(160, 150, True), organ)  # off: the organ
    # a mask that already holds some of the organ around branch a (its median HU the organ's):
    # what the click took in is not the clicked branch's tissue, so the focus view again
    held = (yy - 100) ** 2 + (xx - 100) ** 2 <= 10**2
    s = Session(pred, img, zoom_out=ZoomOut(), initial_mask=held)
    np.testing.assert_array_equal(s.add_click(160, 150, True), held | branch_b)
    # a small dark lesion first, then a click on the organ: the focus view takes much of the
    # organ as well, so the whole organ stays
    lesion_img = img.copy()
    lesion = (yy - 128) ** 2 + (xx - 128) ** 2 <= 6**2
    lesion_img[lesion] = 30.0
    s = Session(pred, lesion_img, zoom_out=ZoomOut(), initial_mask=lesion)
    np.testing.assert_array_equal(s.add_click(128, 150, True), lesion_img > 0)
    # a volume's click on a slice with a mask: the same
    vs = VolumeSession(pred, np.stack([img] * 3), zoom_out=ZoomOut())
    vs.set_slice_mask(1, branch_a, propagate=False)
    np.testing.assert_array_equal(vs.add_click(1, 160, 150, True, propagate=False)[1], branch_a | branch_b)


def test_a_large_first_mask_not_of_the_clicked_centre_is_zoomed_in_not_out():
    """ZoomOut(centre_radius_px): a first click on a small bright vessel inside a large organ
    takes the organ at the full view (over min_area_fraction of the slice, so it would be
    zoomed out); the clicked centre (a 1.5 px disk: the vessel, 90 HU above the organ) is not
    the mask's tissue, so the slice is predicted again zoomed in, on the vessel, and its later
    clicks go on on a crop; the same in a volume. A click on the organ itself, a click on fat,
    or centre_radius_px 0 keep the large mask for the zoom-out."""
    from iunet.inference import ZoomOut

    yy, xx = np.mgrid[:256, :256]
    img = np.full((256, 256), -100.0, np.float32)
    organ = (yy - 128) ** 2 + (xx - 128) ** 2 <= 40**2  # 7.7 % of the slice: a large first mask
    vessel = (yy - 120) ** 2 + (xx - 135) ** 2 <= 3**2
    img[organ] = 110.0
    img[vessel] = 200.0
    pred = FocusPredictor(img.shape)  # the full view: the organ; a smaller view: the clicked tissue
    full = pred.predict_prepared([torch.from_numpy(img)], [img.shape], [[Click(120, 135, True, 5.0)]], [None])[0]
    np.testing.assert_array_equal(full >= 0.5, organ)
    assert ZoomOut().applies(full, [Click(120, 135, True, 5.0)])
    s = Session(pred, img, zoom_out=ZoomOut())
    np.testing.assert_array_equal(s.add_click(120, 135, True), vessel)
    assert s.zoomed_in and pred.views[-1] == (85, 85)
    s.add_click(121, 135, True)
    assert pred.views[-1] != img.shape and not (s.mask & ~vessel).any()  # later clicks on a crop
    vs = VolumeSession(pred, np.stack([img] * 3), zoom_out=ZoomOut())
    np.testing.assert_array_equal(vs.add_click(1, 120, 135, True, propagate=False)[1], vessel)
    assert vs._zoomed == {1}
    # the organ's own centre, a click on fat, or the check off: not zoomed in (the zoom-out's case)
    on_organ = [Click(150, 110, True, 5.0)]
    assert ZoomOut().zoom_in(pred, img, full, on_organ, centre=True) is None
    fat = img.copy()
    fat[vessel] = -80.0
    assert ZoomOut().zoom_in(pred, fat, full, [Click(120, 135, True, 5.0)], centre=True) is None
    assert ZoomOut(centre_radius_px=0).zoom_in(pred, img, full, [Click(120, 135, True, 5.0)], centre=True) is None
    # without centre, the click's disk (5 px, mostly organ) is the test, as before: the organ is the clicked tissue
    assert ZoomOut().zoom_in(pred, img, full, [Click(120, 135, True, 5.0)]) is None


def test_zoomed_out_view_is_the_shrunk_grid_in_air_and_boxes_map_clicks_and_output():
    """``prepare_zoomed_out``: the prepared slice shrunk in the middle of windowed air, on a grid
    the network's poolings divide; ``boxes`` put the clicks and previous mask into that part of
    the grid and take the output from it; the whole grid as the box is the plain prediction."""
    import torch.nn.functional as F

    from iunet.inference import ZoomOut
    from iunet.model import Checkpoint, InputConfig, ModelConfig, UNet

    torch.manual_seed(0)
    mc = ModelConfig(base_channels=4, depth=2, use_prev_mask=True, geodesic=True)
    predictor = Predictor(Checkpoint(UNet(mc), mc, InputConfig(grid_px=64)), device="cpu")
    rng = np.random.default_rng(3)
    hu = rng.normal(40, 30, (100, 90)).astype(np.float32)
    grid = predictor.prepare(hu)  # (1, 64, 64)
    view, box = predictor.prepare_zoomed_out(grid, 2.0, 5)
    y0, y1, x0, x1 = box
    assert view.shape == (1, 44, 44) and box == (6, 38, 6, 38)  # 32 + 2 × 5 = 42, rounded up to 4 (depth 2)
    assert (view[:, :y0] == 0).all() and (view[:, :, x1:] == 0).all()  # air (-1000 HU) windowed is 0
    want = F.interpolate(grid[None], size=(32, 32), mode="bilinear", align_corners=False, antialias=True)[0]
    assert torch.equal(view[:, y0:y1, x0:x1], want)
    with pytest.raises(ValueError):
        predictor.prepare_zoomed_out(grid, 0.0, 5)
    # a click and a previous mask land inside the box, scaled to it
    click = Click(50, 45, True, 6.0)  # the slice's middle
    prev = np.zeros(hu.shape, bool)
    prev[:50] = True  # the slice's top half
    x = predictor.build_inputs([view], [hu.shape], [[click]], [prev], [box])[0]  # image, 2 disks, previous mask, 2 geodesic
    assert x.shape == (6, 44, 44)
    ys, xs = np.nonzero(x[1].numpy())
    assert abs(ys.mean() - 22) <= 1 and abs(xs.mean() - 22) <= 1 and ys.max() - ys.min() <= 4  # radius 6 → about 1 px
    want_prev = np.zeros((44, 44), np.float32)
    want_prev[6:22, 6:38] = 1.0  # the top half of the box
    np.testing.assert_array_equal(x[3].numpy(), want_prev)
    assert x[4].numpy().argmax() == 22 * 44 + 22 and x[4].max() == 1.0  # the geodesic map peaks at the click
    # the output is the box's part, at the slice's size; the full box is the plain prediction
    full = (0, 64, 0, 64)
    np.testing.assert_array_equal(predictor.predict_prepared([grid], [hu.shape], [[click]], None, [full])[0],
                                  predictor.predict_prepared([grid], [hu.shape], [[click]])[0])
    zoomed = ZoomOut(margin_px=5, refine=False).predict(predictor, [hu], [[click]])[0]
    assert zoomed.shape == hu.shape
    np.testing.assert_array_equal(zoomed, ZoomOut(margin_px=5, refine=False).predict(predictor, [hu], [[click]], [grid])[0])
    with torch.inference_mode():
        logits = predictor.model(predictor.build_inputs([view], [hu.shape], [[click]], None, [box]))
    want = torch.sigmoid(F.interpolate(logits[:, :, y0:y1, x0:x1], size=hu.shape, mode="bilinear", align_corners=False))[0, 0]
    np.testing.assert_allclose(zoomed, want.numpy(), atol=1e-6)
    # refined (an option): the full view, with the zoomed-out mask as the previous mask
    np.testing.assert_array_equal(ZoomOut(margin_px=5, refine=True).predict(predictor, [hu], [[click]], [grid])[0],
                                  predictor.predict_prepared([grid], [hu.shape], [[click]], [zoomed >= 0.5])[0])


def test_onnx_runtime_gives_the_torch_probabilities():
    """``runtime="onnx"`` runs the same network: the same probabilities (to float rounding) for a
    batch with clicks, a previous mask, geodesic maps and a previous mask's own image (2.5D), on
    the full grid and on a zoomed-out view of another size; its Session masks are the torch
    Session's."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    import torch

    from iunet.model import Checkpoint, InputConfig, ModelConfig, UNet

    torch.manual_seed(3)
    mc = ModelConfig(base_channels=4, depth=2, use_prev_mask=True, geodesic=True, prev_image=True)
    model = UNet(mc)
    for m in model.modules():  # non-trivial batch-norm statistics, so that folding them is tested
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    ck = Checkpoint(model.eval(), mc, InputConfig(grid_px=64))
    pt, ox = Predictor(ck, device="cpu"), Predictor(ck, device="cpu", runtime="onnx")
    assert ox.runtime == "onnx" and "ONNX Runtime" in ox.describe_device()
    rng = np.random.default_rng(1)
    a, b = rng.normal(0, 100, (90, 70)).astype(np.float32), rng.normal(40, 60, (64, 64)).astype(np.float32)
    prev = np.zeros((64, 64), bool)
    prev[20:40, 15:35] = True
    clicks = [[Click(45, 30, True)], [Click(30, 25, True), Click(10, 50, False)]]
    want = pt.predict_batch([a, b], clicks, [None, prev], [None, b[::-1].copy()])
    got = ox.predict_batch([a, b], clicks, [None, prev], [None, b[::-1].copy()])
    for w, g in zip(want, got):
        assert g.shape == w.shape and g.dtype == np.float32
        np.testing.assert_allclose(g, w, atol=1e-4)
    view, box = ox.prepare_zoomed_out(ox.prepare(a), 2.0, 4)  # another grid size through the same export
    assert view.shape[-1] != ox.grid_px
    np.testing.assert_allclose(ox.predict_prepared([view], [a.shape], [clicks[0]], None, [box])[0],
                               pt.predict_prepared([view], [a.shape], [clicks[0]], None, [box])[0], atol=1e-4)
    s_pt, s_ox = Session(pt, a), Session(ox, a)
    for y, x, pos in [(45, 30, True), (20, 20, False), (70, 50, True)]:
        np.testing.assert_array_equal(s_ox.add_click(y, x, pos), s_pt.add_click(y, x, pos))


def test_onnx_runtime_refuses_what_it_does_not_run(predictor):
    ck = predictor.checkpoint
    with pytest.raises(ValueError, match="runtime must be one of"):
        Predictor(ck, device="cpu", runtime="tensorrt")
    with pytest.raises(ValueError, match="fp32 on the CPU"):
        Predictor(ck, device="cpu", dtype="bf16", runtime="onnx")


def _prev_image_predictor(tmp_path):
    import torch

    from iunet.model import Checkpoint, InputConfig, ModelConfig, UNet

    torch.manual_seed(0)
    mc = ModelConfig(base_channels=4, depth=2, use_prev_mask=True, prev_image=True)
    return Predictor(Checkpoint(UNet(mc).eval(), mc, InputConfig(grid_px=32)), device="cpu")


def test_prev_image_channel_is_the_slice_itself_unless_a_neighbour_is_given(tmp_path):
    p = _prev_image_predictor(tmp_path)
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 200, (40, 40)).astype(np.float32), rng.normal(0, 200, (40, 40)).astype(np.float32)
    ga, gb = p.prepare(a), p.prepare(b)
    x = p.build_inputs([ga, ga], [a.shape] * 2, [[], []], [None, None], None, [None, gb])
    assert x.shape[1] == 5
    np.testing.assert_array_equal(x[0, -1].numpy(), ga[0].numpy())
    np.testing.assert_array_equal(x[1, -1].numpy(), gb[0].numpy())
    assert not np.allclose(p.predict(a, [], prev_image_hu=b), p.predict(a))  # the channel is used
    np.testing.assert_allclose(p.predict_batch([a], [[]], None, [b])[0], p.predict(a, [], prev_image_hu=b), atol=1e-6)
    with pytest.raises(ValueError, match="shape"):
        p.predict(a, [], prev_image_hu=b[:30])


def test_volume_propagation_feeds_the_neighbours_image(tmp_path):
    """Each propagated slice gets, beside the carried mask, the image of the slice it was carried
    from; a click on a slice gets its own image with its own mask."""
    import torch

    from iunet.inference import VolumeSession

    p = _prev_image_predictor(tmp_path)
    seen = []
    build = p.build_inputs

    def recording(images, shapes, clicks, prev_masks=None, boxes=None, prev_images=None):
        x = build(images, shapes, clicks, prev_masks, boxes, prev_images)
        seen.extend((img[0].clone(), x[i, -1].clone(), bool(clicks[i])) for i, img in enumerate(images))
        return x

    p.build_inputs = recording
    vol = np.stack([np.full((40, 40), 10.0 * z, np.float32) for z in range(6)])  # each slice its own HU
    vol[:, 10:30, 10:30] += 100.0
    vs = VolumeSession(p, vol)
    start = np.zeros((40, 40), bool)
    start[12:28, 12:28] = True
    vs.set_slice_mask(3, start, propagate=False)
    vs.propagate_from(3)
    grids = {z: p.prepare(vol[z])[0] for z in range(6)}
    which = lambda t: next(z for z, g in grids.items() if torch.equal(g, t))  # noqa: E731
    steps = [(which(img), which(pi)) for img, pi, _ in seen]
    assert (2, 3) in steps and (4, 3) in steps  # the first step both ways, from slice 3's image
    assert all(abs(z - pz) == 1 for z, pz in steps)
    seen.clear()
    vs.add_click(3, 20, 20, True, propagate=False)
    assert [(which(img), which(pi)) for img, pi, _ in seen] == [(3, 3)]


def test_a_clicked_slice_predicted_again_from_a_carried_mask_gets_that_neighbours_image():
    """``_refresh_anchor``: the carried mask comes with the image of the slice it was carried from."""

    class Recorder(OraclePredictor):
        def __init__(self):
            super().__init__()
            self.config = SimpleNamespace(use_prev_mask=True, interactive=True, prev_image=True)
            self.seen = []

        def predict_prepared(self, images, shapes, clicks, prev_masks, boxes=None, prev_images=None):
            self.seen.append([None if p is None else float(p[0, 0]) for p in (prev_images or [None] * len(images))])
            return super().predict_prepared(images, shapes, clicks, prev_masks)

    vol, _ = _cylinder_volume()
    vol -= np.arange(vol.shape[0], dtype=np.float32)[:, None, None]  # each slice's corner tells which it is
    pred = Recorder()
    vs = VolumeSession(pred, vol)
    vs.add_click(9, 20, 20, True, propagate=False)
    pred.seen.clear()
    carried = vs.mask[9].copy()
    carried[14:18, 14:18] = False  # a different mask, so that the slice changes
    vs._refresh_anchor(9, carried, {}, 10)
    assert pred.seen == [[float(vol[10, 0, 0])]]


def test_a_first_click_can_be_seen_again_in_another_view_and_undone():
    """VolumeSession.view_first_click: a slice's only (foreground) click predicted again in
    another view replaces the slice's mask and is carried to the neighbours: "full" the plain
    view (a short-sighted model: part of a large organ), "out" the slice zoomed out (the organ
    whole, as ZoomOut's own first click gave), "in" a view a third of the slice wide around the
    click (the spot; the slice is then marked zoomed in for its later clicks). Each is one
    undoable action; a slice with no click, two clicks or a background click is refused."""
    from iunet.inference import ZoomOut

    img = np.full((128, 128), -100.0, np.float32)
    img[8:120, 8:88] = 60.0  # a large organ
    vol = np.stack([img] * 3)
    vs = VolumeSession(ShortSightedPredictor(), vol, zoom_out=ZoomOut())
    first = vs.add_click(1, 64, 48, True).copy()  # large: ZoomOut kept the zoomed-out mask
    organ = img > 0
    assert (first[1] & organ).sum() > 0.6 * organ.sum() and not (first[1] & ~organ).any()
    plain = vs.view_first_click(1, "full").copy()
    assert 0 < plain[1].sum() < 0.5 * first[1].sum() and not (plain[1] & ~first[1]).any()
    assert (plain == plain[1]).all()  # carried to both neighbours
    np.testing.assert_array_equal(vs.view_first_click(1, "out"), first)
    spot = vs.view_first_click(1, "in").copy()
    yy, xx = np.nonzero(spot[1])
    assert 0 < spot[1].sum() < plain[1].sum() and yy.min() >= 64 - 22 and yy.max() < 64 + 22 and xx.min() >= 48 - 22
    assert 1 in vs._zoomed
    assert vs.undo()
    np.testing.assert_array_equal(vs.mask, first)
    assert 1 not in vs._zoomed
    for z, bad in ((0, "full"), (1, "sideways")):  # no click on slice 0; an unknown view
        with pytest.raises(ValueError):
            vs.view_first_click(z, bad)
    vs.add_click(1, 20, 20, True)
    with pytest.raises(ValueError, match="one click"):
        vs.view_first_click(1, "out")
    other = VolumeSession(ShortSightedPredictor(), vol, zoom_out=ZoomOut())
    other.add_click(2, 64, 48, False)
    with pytest.raises(ValueError, match="background"):
        other.view_first_click(2, "in")


def test_a_slice_session_sees_its_first_click_in_another_view():
    """Session.view_first_click: the same views as a volume's, one undoable step each; after
    "in" the later clicks are predicted on a crop (zoomed_in), after "out" not."""
    from iunet.inference import Session, ZoomOut

    img = np.full((128, 128), -100.0, np.float32)
    img[8:120, 8:88] = 60.0
    pred = ShortSightedPredictor()
    s = Session(pred, img, zoom_out=ZoomOut())
    with pytest.raises(ValueError, match="0 clicks"):
        s.view_first_click("out")
    first = s.add_click(64, 48, True).copy()
    vs = VolumeSession(ShortSightedPredictor(), img[None], zoom_out=ZoomOut())
    vs.add_click(0, 64, 48, True)
    for view in ("full", "in", "out"):  # as a volume's slice
        np.testing.assert_array_equal(s.view_first_click(view), vs.view_first_click(0, view)[0])
        assert s.zoomed_in == (view == "in") and len(s.clicks) == 1
    assert s.undo() and s.zoomed_in and s.undo() and not s.zoomed_in and s.undo()
    np.testing.assert_array_equal(s.mask, first)
    with pytest.raises(ValueError, match="unknown view"):
        s.view_first_click("left")
    s.add_click(20, 20, False)
    with pytest.raises(ValueError, match="2 clicks"):
        s.view_first_click("in")
