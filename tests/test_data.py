from dataclasses import replace

import numpy as np
import pytest
from scipy import ndimage

from iunet.data import HU_ORGAN, SampleConfig, SliceBank, make_sample, render_ct, slices_from_volume, synthetic_labels, with_context
from iunet.model import InputConfig


def test_synthetic_labels_and_render_are_seeded():
    a = render_ct(synthetic_labels(64, np.random.default_rng(0)), np.random.default_rng(1))
    b = render_ct(synthetic_labels(64, np.random.default_rng(0)), np.random.default_rng(1))
    np.testing.assert_array_equal(a, b)
    assert a.shape == (64, 64) and a.dtype == np.float32
    assert a.min() < -900 and a.max() > 100  # air outside, bone/organs inside


def test_rendered_structure_has_its_own_intensity():
    sl = synthetic_labels(64, np.random.default_rng(3))
    hu = render_ct(sl, np.random.default_rng(4))
    for k in np.unique(sl.labels)[1:]:
        m = sl.labels == k
        assert np.isfinite(hu[m]).all()


def test_sample_clicks_follow_the_paper():
    rng = np.random.default_rng(0)
    cfg = SampleConfig(inputs=InputConfig(grid_px=64, alpha=None, default_radius_px=3), interactions=1, max_interactions=1)
    s = make_sample(synthetic_labels(64, rng), rng, cfg)
    assert s.image.shape == (1, 64, 64) and s.guidance.shape == (2, 64, 64)
    pos = [c for c in s.clicks if c.positive]
    neg = [c for c in s.clicks if not c.positive]
    assert len(pos) == 1 and len(neg) == 1
    assert s.target[0, pos[0].y, pos[0].x] == 1 and s.target[0, neg[0].y, neg[0].x] == 0
    assert s.weight.max() == 10.0 and s.weight[0, pos[0].y, pos[0].x] == 10.0


def test_slices_from_volume_and_context():
    lab = np.zeros((3, 128, 128), np.int16)
    lab[1, 40:80, 40:80] = 1
    sls = slices_from_volume(lab, 64, target_ids=(1,))
    assert len(sls) == 1 and sls[0].labels.shape == (64, 64) and sls[0].native_px == 128
    ctx = synthetic_labels(64, np.random.default_rng(0))
    comb = with_context(sls[0], ctx)
    assert comb.target_ids == (1,) and (comb.labels == 1).sum() == (sls[0].labels == 1).sum()
    bank = SliceBank(64)
    bank.add("x", sls)
    assert bank.draw(np.random.default_rng(0)).labels.shape == (64, 64)


def _tube_volume():
    """A (12, 64, 64) label volume: a disk on slices 3..8 (label 1), a far blob on every slice (2)."""
    lab = np.zeros((12, 64, 64), np.int16)
    yy, xx = np.mgrid[:64, :64]
    for z in range(3, 9):
        lab[z][(yy - 30) ** 2 + (xx - 30) ** 2 <= 100] = 1
    lab[:, 50:58, 5:13] = 2
    return lab


def test_propagation_samples_carry_the_neighbour_and_end_with_empty_targets():
    sls = slices_from_volume(_tube_volume(), 64, target_ids=(1,), spacing_z_mm=5.0)
    assert [s.z for s in sls] == list(range(3, 9)) and sls[0].volume.shape == (12, 64, 64)
    cfg = SampleConfig(inputs=InputConfig(grid_px=64), propagate_p=1.0, geometry=False, flip=False)
    rng = np.random.default_rng(0)
    n_empty = 0
    for i in range(40):
        s = make_sample(sls[i % len(sls)], rng, cfg)
        assert s.clicks == [] and s.prev.shape == (1, 64, 64) and s.prev.any()
        n_empty += not s.target.any()
        if s.target.any():  # the same structure (the disk), never the far blob
            assert s.target[0, 30, 30] == 1 and s.target[0, 54, 9] == 0
    assert 5 <= n_empty <= 35  # structure ends are part of the training mix


def test_near_end_pairs_carry_a_small_mask_onto_the_last_slice():
    """--near-end-p: pairs taken at a structure's end go, that share of the time, onto its last
    slice instead of past it, so that the model does not learn "a small carried mask has ended"."""
    lab = np.zeros((12, 64, 64), np.int16)
    yy, xx = np.mgrid[:64, :64]
    for z, r in zip(range(3, 9), (3, 6, 10, 10, 6, 3)):  # tapering at both ends
        lab[z][(yy - 30) ** 2 + (xx - 30) ** 2 <= r * r] = 1
    sls = slices_from_volume(lab, 64, target_ids=(1,), spacing_z_mm=5.0)
    counts = {}
    for near, max_px in ((0.0, 0), (1.0, 0), (1.0, 10), (1.0, 400)):
        cfg = SampleConfig(inputs=InputConfig(grid_px=64), propagate_p=1.0, geometry=False, flip=False, near_end_p=near,
                           near_end_max_px=max_px)
        rng = np.random.default_rng(0)
        samples = [make_sample(sls[i % len(sls)], rng, cfg) for i in range(60)]
        counts[near if max_px == 0 else max_px] = (sum(not s.target.any() for s in samples),
                        sum(s.target.any() and s.target.sum() <= 40 for s in samples))  # empty; onto a last slice (r = 3)
    # the walked-to ends become pairs onto the last slice (a pair that starts on a last slice and
    # steps outward still ends: a sixth of the pairs here) ...
    assert counts[0.0][0] >= 20 and counts[1.0][0] <= counts[0.0][0] // 2
    assert counts[1.0][1] > counts[0.0][1] + 5  # ... whose small target goes on
    # --near-end-max-px: only structures no larger than that (every cross-section here is over
    # 10 px and under 400) are taken onto their last slice; larger ones still end
    assert counts[10][0] >= 20 and counts[400][0] <= counts[0.0][0] // 2
    plain = make_sample(sls[0], np.random.default_rng(5), SampleConfig(inputs=InputConfig(grid_px=64), propagate_p=1.0))
    again = make_sample(sls[0], np.random.default_rng(5), SampleConfig(inputs=InputConfig(grid_px=64), propagate_p=1.0, near_end_p=0.0))
    np.testing.assert_array_equal(plain.image, again.image)


def test_prev_image_shows_the_slice_the_carried_mask_was_drawn_on():
    """2.5D samples: a propagation sample's previous image is its neighbour (the structure there
    where the carried mask is, gone where the structure has ended), the same scan elsewhere;
    a click sample's is its own image. With or without it, the rest of a sample is the same."""
    sls = slices_from_volume(_tube_volume(), 64, target_ids=(1,), spacing_z_mm=5.0)
    cfg = SampleConfig(inputs=InputConfig(grid_px=64), propagate_p=1.0, geometry=False, flip=False, prev_image=True, window_jitter=0.0)
    rng = np.random.default_rng(1)
    ended = carried = 0
    for i in range(30):
        s = make_sample(sls[i % len(sls)], rng, cfg)
        assert s.prev_image.shape == (1, 64, 64) and s.prev_hu.shape == (64, 64)
        prev, target = s.prev[0] > 0.5, s.target[0] > 0.5
        yy, xx = np.mgrid[:64, :64]
        inside = (yy - 30) ** 2 + (xx - 30) ** 2 <= 36  # the disk's core (no flips or rotations here)
        far = np.zeros_like(prev)
        far[50:58, 5:13] = True  # the blob on every slice: unchanged, up to fresh noise
        assert abs(float(np.median(s.prev_hu[far])) - float(np.median(s.hu[far]))) < 15
        if not target.any():  # ended: the disk is on the previous image only
            ended += 1
            # a structure of its own there (an organ's HU, one texture), not the current slice
            assert HU_ORGAN[0] - 30 < np.median(s.prev_hu[inside]) < HU_ORGAN[1] + 30 and s.prev_hu[inside].std() < 40
            assert not np.allclose(s.prev_hu[inside], s.hu[inside], atol=15)
        else:  # carried: the disk on both, at one HU
            carried += 1
            assert abs(float(np.median(s.prev_hu[inside])) - float(np.median(s.hu[inside]))) < 15
    assert ended and carried
    click = make_sample(sls[0], np.random.default_rng(2), SampleConfig(inputs=InputConfig(grid_px=64), prev_image=True, single_click_p=1.0))
    np.testing.assert_array_equal(click.prev_image, click.image)
    for seed in range(4):  # the neighbour comes from a child generator: the rest is the sample drawn without it
        a = make_sample(sls[seed], np.random.default_rng(seed), replace(cfg, prev_image=False))
        b = make_sample(sls[seed], np.random.default_rng(seed), cfg)
        assert a.prev_image is None and b.prev_image is not None
        for name in ("image", "target", "prev", "weight"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


def test_neighbour_hu_gives_changed_pixels_their_new_structures_intensity():
    from iunet.data import neighbour_hu

    lab = np.zeros((64, 64), np.int32)
    lab[10:30, 10:30] = 1  # structure 1 ends on the neighbour
    lab[35:55, 35:55] = 2  # structure 2 grows on the neighbour
    hu = np.full((64, 64), -80.0, np.float32)
    hu[lab == 1], hu[lab == 2] = 150.0, 60.0
    prev = lab.copy()
    prev[lab == 1] = 0
    prev[30:58, 30:58] = 2
    prev[2:8, 50:60] = 3  # a structure only the neighbour has
    out = neighbour_hu(hu, lab, prev, np.random.default_rng(0))
    core = lambda m: ndimage.binary_erosion(m, iterations=3)  # noqa: E731 (away from the blurred edges)
    assert abs(np.median(out[core(lab == 1)]) - (-80)) < 15  # background where structure 1 was
    assert abs(np.median(out[core(prev == 2) & (lab != 2)]) - 60) < 15  # structure 2's HU where it grew
    assert abs(np.median(out[core(lab == 2)]) - 60) < 15
    assert np.median(out[prev == 3]) > 0  # an organ's HU of its own
    assert np.abs(out - hu)[core(lab == 0) & (prev == 0)].std() > 0  # fresh noise: not a copy


def test_first_click_has_the_default_radius_as_at_test_time():
    rng = np.random.default_rng(1)
    lab = np.zeros((64, 64), np.int16)
    lab[10:50, 10:50] = 1  # 1,600 px on the grid = 100 k px native: α·area would hit the 15 px cap
    from iunet.data import LabelSlice

    sl = LabelSlice(lab, 512)
    cfg = SampleConfig(inputs=InputConfig(grid_px=64, alpha=1 / 800, default_radius_px=5), first_click_default=True, single_click_p=1.0,
                       centre_click_p=1.0, interactions=1, max_interactions=1, geometry=False)
    s = make_sample(sl, rng, cfg)
    assert len(s.clicks) == 1 and s.clicks[0].positive
    assert s.clicks[0].radius_px == 5 * 64 / 512  # default radius (native px) on the grid
    assert (s.clicks[0].y, s.clicks[0].x) in {(29, 29), (29, 30), (30, 29), (30, 30)}  # deepest point
    old = make_sample(sl, np.random.default_rng(1), SampleConfig(inputs=InputConfig(grid_px=64, alpha=1 / 800), geometry=False, interactions=1, max_interactions=1))
    assert old.clicks[0].radius_px == 15 * 64 / 512  # the paper's training rule: α · true area


def test_training_labels_cover_large_and_thin_structures():
    from scipy import ndimage

    from iunet.data import training_labels

    rng = np.random.default_rng(0)
    areas, thin = [], 0
    for _ in range(30):
        lab = training_labels(128, rng).labels
        for k in np.unique(lab)[1:]:
            m = lab == k
            areas.append(m.sum())
            thin += ndimage.distance_transform_edt(m).max() <= 3 and m.sum() > 60
    assert max(areas) > 0.08 * 128 * 128 and min(areas) < 60 and thin >= 3


def test_touching_structures_can_share_the_targets_intensity():
    lab = np.zeros((64, 64), np.int16)
    lab[10:40, 10:30] = 1
    lab[10:40, 30:50] = 2  # touches the target
    lab[50:60, 50:60] = 3  # far away
    from iunet.data import LabelSlice

    sl = LabelSlice(lab, 512)
    a = render_ct(sl, np.random.default_rng(5))
    np.testing.assert_array_equal(a, render_ct(sl, np.random.default_rng(5), focus_id=0, similar_p=1.0))  # off: as before
    gaps = []
    for seed in range(6):
        hu = render_ct(sl, np.random.default_rng(seed), focus_id=1, similar_p=1.0)
        gaps.append(abs(np.median(hu[lab == 1]) - np.median(hu[lab == 2])))
    assert max(gaps) < 45  # the touching organ is always within a few HU (± 12 HU, blur, noise)


def _organ_slice():
    from iunet.data import LabelSlice

    lab = np.zeros((96, 96), np.int16)
    yy, xx = np.mgrid[:96, :96]
    lab[((yy - 48) / 30.0) ** 2 + ((xx - 40) / 22.0) ** 2 <= 1] = 1  # a kidney-sized organ
    lab[70:76, 70:90] = 2  # a thin structure: too thin for an interior
    return LabelSlice(lab, 512)


def test_interior_structure_is_inside_the_label_and_differs_from_it():
    from iunet.data import render_interior

    sl = _organ_slice()
    organ = sl.labels == 1
    a = render_ct(sl, np.random.default_rng(5))
    np.testing.assert_array_equal(a, render_ct(sl, np.random.default_rng(5), interior_p=0.0))  # off: as before
    kinds = set()
    for seed in range(12):
        rng = np.random.default_rng(seed)
        hu = np.full((96, 96), 100.0, np.float32)
        region = render_interior(hu, organ, 100.0, rng)
        assert region.any() and not (region & ~organ).any()  # inside the organ, never outside
        assert (hu[~region] == 100.0).all() and np.abs(hu[region] - 100.0).mean() > 20  # another intensity
        med = float(np.median(hu[region]))
        kinds.add("fat sinus" if med < -20 else "enhanced vessels" if med > 130 else "other")
        assert not render_interior(hu.copy(), sl.labels == 2, 100.0, rng).any()  # 6 px thin: none
    assert {"fat sinus", "enhanced vessels"} <= kinds
    # in a rendering, the organ's core then differs from its rim in some draws
    cores = [render_ct(sl, np.random.default_rng(s), interior_p=1.0) for s in range(6)]
    core = organ & (np.hypot(*np.mgrid[:96, :96] - np.array([48, 40])[:, None, None]) < 6)
    assert max(abs(np.median(h[core]) - np.median(h[organ & ~core])) for h in cores) > 40


def test_large_targets_can_be_chosen_by_area():
    from iunet.data import choose_target_id

    sl = _organ_slice()  # organ 2,000+ px, thin structure 120 px
    rng = np.random.default_rng(0)
    assert choose_target_id(sl, np.random.default_rng(3))[1] == choose_target_id(sl, np.random.default_rng(3), 0.0)[1]
    uniform = [choose_target_id(sl, rng)[1] for _ in range(400)]
    by_area = [choose_target_id(sl, rng, large_p=1.0)[1] for _ in range(400)]
    assert 0.4 < np.mean(np.array(uniform) == 1) < 0.6
    assert np.mean(np.array(by_area) == 1) > 0.9


def test_partial_previous_mask_is_a_part_of_it():
    from iunet.data import partial_mask

    m = _organ_slice().labels == 1
    fracs = []
    for seed in range(20):
        p = partial_mask(m, np.random.default_rng(seed))
        assert not (p & ~m).any()
        fracs.append(p.sum() / m.sum())
    assert min(fracs) >= 0.1 and np.mean(fracs) < 0.85 and max(fracs) <= 1.0
    assert not partial_mask(np.zeros((8, 8), bool), np.random.default_rng(0)).any()
    # in propagation samples, the previous-mask channel then holds only a part of the neighbour
    from iunet.data import LabelSlice

    vol = np.zeros((6, 64, 64), np.int16)
    vol[:, 16:48, 12:52] = 1
    sls = slices_from_volume(vol, 64, spacing_z_mm=2.0)
    cfg = SampleConfig(inputs=InputConfig(grid_px=64), propagate_p=1.0, partial_prev_p=1.0, geometry=False)
    rng = np.random.default_rng(1)
    ratios = [s.prev.sum() / max(s.target.sum(), 1) for s in (make_sample(sls[2], rng, cfg) for _ in range(12)) if s.target.any() and not s.clicks]
    assert ratios and np.mean(ratios) < 0.8


def test_spill_samples_correct_a_mask_that_spilt_into_a_touching_structure():
    from iunet.data import LabelSlice, spill_mask

    lab = np.zeros((64, 64), np.int16)
    lab[10:40, 10:30] = 1
    lab[10:40, 30:50] = 2  # touches 1
    lab[50:60, 50:60] = 3  # touches nothing
    rng = np.random.default_rng(0)
    leak = spill_mask(lab, 1, lab == 1, rng)
    assert leak is not None and (leak[lab == 1]).all() and (leak & (lab == 2)).any() and not (leak & (lab == 3)).any()
    assert spill_mask(lab, 3, lab == 3, rng) is None  # nothing touches it
    sl = LabelSlice(lab, 512, target_ids=(1,))
    cfg = SampleConfig(inputs=InputConfig(grid_px=64), spill_p=1.0, geometry=False)
    s = make_sample(sl, np.random.default_rng(2), cfg)
    prev, target = s.prev[0] > 0.5, s.target[0] > 0.5
    assert (prev & ~target).any() and not (target & ~prev).any()  # the spill is in the previous mask
    neg = [c for c in s.clicks if not c.positive]
    assert len(neg) == 1 and (prev & ~target)[neg[0].y, neg[0].x]  # the background click is on the spill
    assert SampleConfig().spill_p == 0.0


def test_a_spill_runs_on_into_the_structures_that_touch_it_up_to_spill_parts():
    """--spill-parts: a leak that ran from the target into one structure and on into the next
    (the 3D-IRCADb liver's carried mask in the kidney and the bowel); never a structure that
    touches neither the target nor the leak, and with one part never past the first."""
    from iunet.data import spill_mask

    lab = np.zeros((64, 64), np.int16)
    lab[10:40, 4:20] = 1
    lab[10:40, 20:36] = 2  # touches 1
    lab[10:40, 36:52] = 3  # touches 2, not 1
    lab[50:60, 54:62] = 4  # touches nothing
    reached1, reached3 = set(), set()
    for seed in range(40):
        one = spill_mask(lab, 1, lab == 1, np.random.default_rng(seed), keep=(1.0, 1.0))
        three = spill_mask(lab, 1, lab == 1, np.random.default_rng(seed), keep=(1.0, 1.0), parts=3)
        for m, got in ((one, reached1), (three, reached3)):
            assert m is not None and m[lab == 1].all() and not m[lab == 4].any()
            got.update(int(v) for v in np.unique(lab[m & (lab != 1)]))
    assert reached1 == {2} and reached3 == {2, 3}
    cfg = SampleConfig(inputs=InputConfig(grid_px=64), spill_p=1.0, spill_parts=3, geometry=False)
    assert SampleConfig().spill_parts == 1 and cfg.spill_parts == 3


def test_propagation_spill_samples_carry_a_leak_the_target_leaves_out():
    """--prop-spill-p: a propagation sample whose previous mask took in a part of a touching
    structure (as a carried mask leaks from the spleen into the kidney) has no click, and its
    target is the structure alone on the neighbouring slice (or nothing where it ends)."""
    from iunet.data import PROP_SPILL_KEEP, PROP_SPILL_MAX

    vol = np.zeros((8, 64, 64), np.int16)
    vol[:, 16:48, 10:30] = 1
    vol[:, 16:48, 30:54] = 2  # touches 1 on every slice
    sls = slices_from_volume(vol, 64, spacing_z_mm=2.0)
    cfg = SampleConfig(inputs=InputConfig(grid_px=64), propagate_p=1.0, prop_spill_p=1.0, geometry=False)
    spills = carried = 0
    for seed in range(40):
        s = make_sample(sls[3], np.random.default_rng(seed), cfg)
        prev, target = s.prev[0] > 0.5, s.target[0] > 0.5
        if s.clicks:  # no neighbour there (walked to the volume's end): an ordinary click sample
            assert not prev.any()
            continue
        if target.any():
            carried += 1
            other = np.asarray(vol[0] == (2 if target[30, 20] else 1))
            leak = prev & other
            assert not (target & other).any()  # the target never holds the leak
            if leak.any():
                spills += 1
                assert leak.sum() <= PROP_SPILL_KEEP[1] * other.sum() + 40  # a part, never the whole neighbour
                assert leak.sum() <= PROP_SPILL_MAX * (prev & ~leak).sum()  # and less than the structure
    assert carried >= 8 and spills >= 0.8 * carried
    assert SampleConfig().prop_spill_p == 0.0


def test_zoom_samples_show_the_object_larger_with_consistent_click_sizes():
    """--zoom-p: a click sample seen through a crop around the object (as ZoomIn shows it) has
    the object larger on the grid, the crop's native size for the α · area click size, and is
    otherwise an ordinary sample; off by default."""
    from iunet.data import LabelSlice, zoom_crop

    lab = np.zeros((64, 64), np.int16)
    lab[28:36, 30:38] = 1  # 8 × 8 px of 64 × 64
    sl = LabelSlice(lab, 512)
    base = dict(inputs=InputConfig(grid_px=64), geometry=False, single_click_p=1.0, first_click_default=True)
    plain = make_sample(sl, np.random.default_rng(0), SampleConfig(**base))
    zoomed = [make_sample(sl, np.random.default_rng(s), SampleConfig(**base, zoom_p=1.0)) for s in range(6)]
    for z in zoomed:
        gain = z.target.sum() / plain.target.sum()
        side = 64 * z.native_px / 512  # the crop's side on the original grid
        assert 1.5 < gain and gain == pytest.approx((64 / side) ** 2, rel=0.35)
        assert z.native_px < 512 and z.target[0][z.clicks[0].y, z.clicks[0].x] == 1
    # the zoom is at most ZOOM_MAX (a crop of a third of the view) and never past the view
    hu = np.zeros((64, 64), np.float32)
    tiny = np.zeros((64, 64), bool)
    tiny[30:32, 30:32] = True
    for s in range(10):
        _, (m,), n = zoom_crop(hu, [tiny], 512, np.random.default_rng(s))
        assert n >= 512 / 3 - 1 and m.any()
    big = np.zeros((64, 64), bool)
    big[4:60, 4:60] = True
    out, (m,), n = zoom_crop(hu, [big], 512, np.random.default_rng(0))
    assert n == 512 and out is hu  # nearly the whole view: no zoom
    assert SampleConfig().zoom_p == 0.0


def test_wrong_previous_mask_samples_teach_a_background_click_to_remove_the_whole_structure():
    """--wrong-prev-p: the previous mask sits on another structure (one touching the target),
    a background click is on it, and the target is the clicked target or, when the mask was
    carried past the target's end, empty; off by default."""
    from iunet.data import LabelSlice, wrong_mask

    lab = np.zeros((64, 64), np.int16)
    lab[10:40, 10:30] = 1
    lab[10:40, 30:50] = 2  # touches 1
    lab[50:60, 50:60] = 3  # touches nothing
    m = wrong_mask(lab, 1, lab == 1, np.random.default_rng(0))
    assert m is not None and (m == (lab == 2)).all()  # the touching structure, whole
    assert wrong_mask(np.where(lab == 1, 1, 0), 1, lab == 1, np.random.default_rng(0)) is None  # nothing else there
    sl = LabelSlice(lab, 512, target_ids=(1,))
    cfg = SampleConfig(inputs=InputConfig(grid_px=64), wrong_prev_p=1.0, geometry=False)
    empty = kept = 0
    for seed in range(12):
        s = make_sample(sl, np.random.default_rng(seed), cfg)
        prev, target = s.prev[0] > 0.5, s.target[0] > 0.5
        assert (prev & (lab == 2)).sum() > 0.7 * prev.sum()  # the mask is on the other structure
        neg = [c for c in s.clicks if not c.positive]
        assert len(neg) == 1 and prev[neg[0].y, neg[0].x]
        if target.any():
            kept += 1
            assert (target == (lab == 1)).all() and [c.positive for c in s.clicks] == [True, False]
        else:
            empty += 1
            assert len(s.clicks) == 1
    assert empty and kept
    assert SampleConfig().wrong_prev_p == 0.0


def test_texture_and_blobs_computed_in_their_box_keep_their_statistics():
    """Rendering speed-ups: a structure's texture is filtered on its box only and scaled by the
    field's theoretical spread (the same spread as a whole-grid field, about 1), and a blob is
    evaluated in the box it can reach (the very same blob and draws)."""
    from scipy import ndimage

    from iunet.data import _noise_std, _smooth_noise_in, random_blob

    for sigma in (1.0, 2.5, 4.0):
        full = ndimage.gaussian_filter(np.random.default_rng(0).standard_normal((512, 512)).astype(np.float32), sigma)
        assert full.std() / _noise_std(sigma) == pytest.approx(1.0, abs=0.05)
        m = np.zeros((256, 256), bool)
        m[100:130, 50:70] = True
        v = np.concatenate([_smooth_noise_in(m, np.random.default_rng(i), sigma) for i in range(100)])
        assert v.shape == (100 * 600,) and v.std() == pytest.approx(1.0, abs=0.06)
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:128, :128]
    for _ in range(50):
        cy, cx, r = rng.uniform(-10, 138), rng.uniform(-10, 138), rng.uniform(1, 40)
        b = random_blob((128, 128), np.random.default_rng(7), cy, cx, r)
        d = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
        assert not (b & (d > 2.2 * r + 1)).any()  # never beyond the box it is evaluated in
        if 0 <= cy < 128 and 0 <= cx < 128 and r > 3:
            assert b[int(cy), int(cx)]  # its centre is inside


def test_a_structure_rendered_on_two_slices_with_one_seed_keeps_its_texture():
    """The demo phantom renders every slice with one seed so that an organ keeps its HU and
    texture from slice to slice (propagation depends on it): a structure that shrinks between
    two slices has the same HU deep inside it on both."""
    from iunet.data import LabelSlice

    yy, xx = np.mgrid[:128, :128]
    big = (((yy - 64) / 40) ** 2 + ((xx - 60) / 30) ** 2 <= 1).astype(np.int16)
    small = (((yy - 64) / 30) ** 2 + ((xx - 60) / 22) ** 2 <= 1).astype(np.int16)
    body = ((yy - 64) / 60) ** 2 + ((xx - 64) / 62) ** 2 <= 1
    a = render_ct(LabelSlice(big, 512, body=body), np.random.default_rng(9))
    b = render_ct(LabelSlice(small, 512, body=body), np.random.default_rng(9))
    deep = ((yy - 64) / 20) ** 2 + ((xx - 60) / 12) ** 2 <= 1
    np.testing.assert_allclose(a[deep], b[deep], atol=1e-3)


def _inner_target_kinds(organ: np.ndarray, option: str) -> set[str]:
    """Draw 16 samples of an organ slice with ``option`` (``lesion_p`` or ``vessel_p``) at 1: the
    target is the organ or the inner structure, never outside the organ, and a first click on
    an inner structure lies in it. Also: the option is off by default, and off the samples are
    as before, draw for draw. Returns the kinds of target seen ({"inner", "organ"})."""
    from iunet.data import LabelSlice

    lab = np.zeros(organ.shape, np.int32)
    lab[organ] = 1
    sl = LabelSlice(lab, 512, target_ids=(1,))
    kinds = set()
    for seed in range(16):
        cfg = SampleConfig(inputs=InputConfig(grid_px=64), geometry=False, single_click_p=1.0, centre_click_p=1.0, **{option: 1.0})
        s = make_sample(sl, np.random.default_rng(seed), cfg)
        target = s.target[0] > 0.5
        assert target.any() and not (target & ~organ).any()
        kinds.add("inner" if target.sum() < organ.sum() else "organ")
        if target.sum() < organ.sum():  # the inner structure is the target: the click lies in it
            assert target[s.clicks[0].y, s.clicks[0].x]
    assert getattr(SampleConfig(), option) == 0.0
    a = make_sample(sl, np.random.default_rng(3), SampleConfig(inputs=InputConfig(grid_px=64)))
    b = make_sample(sl, np.random.default_rng(3), SampleConfig(inputs=InputConfig(grid_px=64), **{option: 0.0}))
    np.testing.assert_array_equal(a.image, b.image)
    return kinds


def test_lesion_samples_paint_a_faint_lesion_that_is_the_target_or_part_of_its_organ():
    from iunet.data import LESION_CONTRAST_HU, inner_lesion, paint_lesion

    yy, xx = np.mgrid[:64, :64]
    organ = (yy - 32) ** 2 / 20**2 + (xx - 32) ** 2 / 24**2 <= 1
    les = inner_lesion(organ, np.random.default_rng(0))
    assert les is not None and les.sum() >= 6 and not (les & ~organ).any() and les.sum() < organ.sum()
    assert inner_lesion((yy - 32) ** 2 + (xx - 32) ** 2 <= 9, np.random.default_rng(0)) is None  # too thin
    hu = np.full((64, 64), 100.0, np.float32)
    shifts = [float(np.median(paint_lesion(hu, les, np.random.default_rng(s))[les]) - 100) for s in range(20)]
    assert all(0.5 * LESION_CONTRAST_HU[0] <= abs(v) <= 1.2 * LESION_CONTRAST_HU[1] for v in shifts)
    assert sum(v < 0 for v in shifts) > sum(v > 0 for v in shifts)  # mostly hypodense
    assert _inner_target_kinds(organ, "lesion_p") == {"inner", "organ"}


def test_vessel_samples_draw_an_enhanced_vessel_that_is_the_target_or_part_of_its_organ():
    from iunet.data import VESSEL_CONTRAST_HU, inner_vessel, paint_vessel

    yy, xx = np.mgrid[:64, :64]
    organ = (yy - 32) ** 2 / 20**2 + (xx - 32) ** 2 / 24**2 <= 1
    shapes = set()
    for seed in range(12):
        ves = inner_vessel(organ, np.random.default_rng(seed))
        if ves is None:
            continue
        assert 6 <= ves.sum() <= 0.4 * organ.sum() and not (ves & ~organ).any()
        assert ndimage.label(ves)[1] == 1  # one connected vessel: one click can mean all of it
        shapes.add("tube" if ves.sum() > 140 else "section")  # a cross-section: radius <= 6 px
    assert shapes == {"tube", "section"}
    assert inner_vessel((yy - 32) ** 2 + (xx - 32) ** 2 <= 9, np.random.default_rng(0)) is None  # too thin
    # --vessel-pieces-p: cross-sections of one tree, several pieces (each needs its own click)
    pieces = [ndimage.label(v)[1] for s in range(24) if (v := inner_vessel(organ, np.random.default_rng(s), 1.0)) is not None]
    assert max(pieces) >= 2 and min(pieces) >= 1
    grown = 0
    for s in range(24):  # the pieces join the vessel drawn without them (the same first draws)
        a, b = inner_vessel(organ, np.random.default_rng(s)), inner_vessel(organ, np.random.default_rng(s), 1.0)
        if a is not None and b is not None:
            assert not (a & ~b).any()
            grown += int(b.sum() > a.sum())
    assert grown >= 3
    ves = next(v for s in range(12) if (v := inner_vessel(organ, np.random.default_rng(s))) is not None)
    hu = np.full((64, 64), 100.0, np.float32)
    shifts = [float(np.median(paint_vessel(hu, ves, np.random.default_rng(s))[ves]) - 100) for s in range(20)]
    assert sum(v >= 0.5 * VESSEL_CONTRAST_HU[0] for v in shifts) > 12 and all(abs(v) >= 8 for v in shifts)  # mostly enhanced
    assert _inner_target_kinds(organ, "vessel_p") == {"inner", "organ"}


def test_sinus_samples_click_a_fat_core_and_mean_the_whole_structure():
    from iunet.data import LabelSlice

    yy, xx = np.mgrid[:64, :64]
    organ = (yy - 30) ** 2 / 16**2 + (xx - 34) ** 2 / 11**2 <= 1
    lab = np.zeros((64, 64), np.int32)
    lab[organ] = 1
    lab[50:60, 5:20] = 2
    sl = LabelSlice(lab, 512, target_ids=(1,))
    cfg = SampleConfig(inputs=InputConfig(grid_px=64), sinus_p=1.0, geometry=False, real_fraction=0.0)
    for seed in range(8):
        s = make_sample(sl, np.random.default_rng(seed), cfg)
        c = s.clicks[0]
        assert (s.target[0] > 0.5).sum() == organ.sum()  # the target is the whole structure, sinus included
        tissue = float(np.median(s.hu[organ]))
        assert tissue > -20  # most of it is still the organ's tissue
        # the first click lies in its fat core (a small one, blurred as a scanner blurs it)
        assert c.positive and organ[c.y, c.x] and s.hu[c.y, c.x] < tissue - 25
    assert SampleConfig().sinus_p == 0.0
    # a renal sinus is a small core with thin branches, not a round blob that looks like a lesion
    from iunet.data import render_interior

    d = ndimage.distance_transform_edt(organ)
    core = np.unravel_index(int(np.argmax(d)), d.shape)
    for seed in range(8):
        hu = np.full((64, 64), 150.0, np.float32)
        region = render_interior(hu, organ, 150.0, np.random.default_rng(seed), fat_sinus=True)
        assert region[core] and not (region & ~organ).any() and hu[core] < -10
        assert region.sum() < 0.3 * organ.sum()


def test_soft_sinus_samples_have_a_fluid_or_soft_tissue_core():
    """--sinus-soft-p: the sinus core is darker than the organ by 30-130 HU but not fat (a renal
    sinus with little fat, urine in the pelvis); its shape, the click and the target as before."""
    from iunet.data import LabelSlice, render_interior

    yy, xx = np.mgrid[:64, :64]
    organ = (yy - 30) ** 2 / 16**2 + (xx - 34) ** 2 / 11**2 <= 1
    d = ndimage.distance_transform_edt(organ)
    core = np.unravel_index(int(np.argmax(d)), d.shape)
    for seed in range(8):
        hu = np.full((64, 64), 160.0, np.float32)
        fat = render_interior(hu.copy(), organ, 160.0, np.random.default_rng(seed), fat_sinus=True)
        region = render_interior(hu, organ, 160.0, np.random.default_rng(seed), fat_sinus=True, soft=True)
        assert (region == fat).all()  # the same shape, another content
        assert 160 - 130 - 30 < hu[core] < 160 - 30 + 30 and hu[core] > -20
        low = np.full((64, 64), 20.0, np.float32)  # an organ near water: the core is fluid, never fat
        render_interior(low, organ, 20.0, np.random.default_rng(seed), fat_sinus=True, soft=True)
        assert low[core] > -30
    lab = np.zeros((64, 64), np.int32)
    lab[organ] = 1
    sl = LabelSlice(lab, 512, target_ids=(1,))
    cfg = SampleConfig(inputs=InputConfig(grid_px=64), sinus_p=1.0, sinus_soft_p=1.0, geometry=False, real_fraction=0.0)
    below = []
    for seed in range(12):
        s = make_sample(sl, np.random.default_rng(seed), cfg)
        c = s.clicks[0]
        assert c.positive and (s.target[0] > 0.5).sum() == organ.sum()
        assert s.hu[c.y, c.x] > -40  # never fat (fat sinuses: -110 to -30 HU)
        below.append(float(np.median(s.hu[organ])) - float(s.hu[c.y, c.x]))
    assert np.median(below) > 25  # clicked in a core darker than the organ
    assert SampleConfig().sinus_soft_p == 0.0


def test_mottled_sinus_samples_mix_fat_and_soft_tissue_in_the_core():
    """--sinus-mottled-p: the fat core gets soft-tissue strands, 30-70 % of it (the 3D-IRCADb
    kidneys' sinus where the robot clicks); the shape as the fat sinus's; off, the rendering is
    the fat sinus, draw for draw; sample clicks and targets as before."""
    from iunet.data import LabelSlice, render_interior

    yy, xx = np.mgrid[:64, :64]
    organ = (yy - 30) ** 2 / 16**2 + (xx - 34) ** 2 / 11**2 <= 1
    shares = []
    for seed in range(8):
        fat_hu = np.full((64, 64), 160.0, np.float32)
        fat = render_interior(fat_hu, organ, 160.0, np.random.default_rng(seed), fat_sinus=True, wide=True)
        hu = np.full((64, 64), 160.0, np.float32)
        region = render_interior(hu, organ, 160.0, np.random.default_rng(seed), fat_sinus=True, wide=True, mottled=True)
        assert (region == fat).all()  # the same shape, another content
        again = np.full((64, 64), 160.0, np.float32)
        render_interior(again, organ, 160.0, np.random.default_rng(seed), fat_sinus=True, wide=True, mottled=False)
        np.testing.assert_array_equal(again, fat_hu)  # off: the fat sinus, draw for draw
        core = region & (fat_hu < -20)  # the fat core (not the urine / vessel branches)
        soft = core & (hu > -10) & (hu < 140)
        shares.append(soft.sum() / max(core.sum(), 1))
        assert (core & (hu < -20)).any()  # some fat stays
    assert 0.2 < np.median(shares) < 0.8
    lab = np.zeros((64, 64), np.int32)
    lab[organ] = 1
    sl = LabelSlice(lab, 512, target_ids=(1,))
    cfg = SampleConfig(inputs=InputConfig(grid_px=64), sinus_p=1.0, sinus_mottled_p=1.0, geometry=False, real_fraction=0.0)
    for seed in range(6):
        s = make_sample(sl, np.random.default_rng(seed), cfg)
        assert s.clicks[0].positive and (s.target[0] > 0.5).sum() == organ.sum()
    assert SampleConfig().sinus_mottled_p == 0.0


def test_wide_sinus_samples_open_the_structure_and_click_either_side():
    """--sinus-wide-p: a wide sinus with a hilum (a kidney's middle slices) takes more of the
    structure than the default one and reaches its border; the first click is at the core or,
    as often, anywhere in the whole structure, which stays the target."""
    from iunet.data import LabelSlice, render_interior

    yy, xx = np.mgrid[:64, :64]
    organ = (yy - 30) ** 2 / 16**2 + (xx - 34) ** 2 / 11**2 <= 1
    d = ndimage.distance_transform_edt(organ)
    core = np.unravel_index(int(np.argmax(d)), d.shape)
    rim = organ & (d <= 1)
    narrow, wide = [], []
    for seed in range(10):
        for out, w in ((narrow, False), (wide, True)):
            region = render_interior(np.full((64, 64), 150.0, np.float32), organ, 150.0, np.random.default_rng(seed), True, wide=w)
            assert region[core] and not (region & ~organ).any()
            out.append(region)
    assert np.median([r.sum() for r in wide]) > 1.3 * np.median([r.sum() for r in narrow])
    assert all((r & rim).any() for r in wide)  # the hilum always opens to the border
    lab = np.zeros((64, 64), np.int32)
    lab[organ] = 1
    sl = LabelSlice(lab, 512, target_ids=(1,))
    cfg = SampleConfig(inputs=InputConfig(grid_px=64), sinus_p=1.0, sinus_wide_p=1.0, geometry=False, real_fraction=0.0)
    at_core = 0
    for seed in range(20):
        s = make_sample(sl, np.random.default_rng(seed), cfg)
        c = s.clicks[0]
        assert c.positive and organ[c.y, c.x] and (s.target[0] > 0.5).sum() == organ.sum()
        at_core += (c.y, c.x) == core
    assert 4 <= at_core <= 16
    assert SampleConfig().sinus_wide_p == 0.0


def test_fat_seam_is_the_interface_of_touching_structures_on_one_side():
    """fat_seam: pixels of a structure within width_px of a structure with a higher label; an
    isolated structure and the background have none."""
    from iunet.data import fat_seam

    lab = np.zeros((32, 32), np.int16)
    lab[8:24, 4:12] = 1
    lab[8:24, 12:20] = 2  # touches 1 along x = 11 | 12
    lab[26:30, 24:30] = 3  # touches nothing
    one, two = fat_seam(lab, 1), fat_seam(lab, 2)
    assert np.array_equal(np.nonzero(one.any(0))[0], [11]) and one[8:24, 11].all() and one.sum() == 16
    assert np.array_equal(np.nonzero(two.any(0))[0], [10, 11]) and two.sum() == 32
    assert not (one & (lab != 1)).any() and not (two & (lab != 1)).any()


def test_seam_p_draws_a_fat_plane_between_touching_structures_of_one_hu():
    """--seam-p: two touching structures rendered at nearly one HU (similar_p) get a darker
    line at their interface; without it (the default) the interface is as bright as both."""
    from iunet.data import LabelSlice

    lab = np.zeros((64, 64), np.int16)
    lab[16:48, 10:32] = 1
    lab[16:48, 32:54] = 2
    sl = LabelSlice(labels=lab, native_px=64)
    line = np.zeros_like(lab, bool)
    line[20:44, 31] = True
    inside = np.zeros_like(lab, bool)
    inside[20:44, 20:26] = inside[20:44, 38:44] = True
    gaps = {0.0: [], 1.0: []}
    for seed in range(12):
        for p in gaps:
            hu = render_ct(sl, np.random.default_rng(seed), focus_id=1, similar_p=1.0, seam_p=p)
            gaps[p].append(float(hu[inside].mean() - hu[line].mean()))
    assert np.median(gaps[1.0]) > 50  # fat (-120..-70 HU) mixed half or more into the plane
    assert abs(np.median(gaps[0.0])) < 25
    assert SampleConfig().seam_p == 0.0


def test_edt_on_the_box_is_the_whole_grid_edt():
    """``_edt`` (the distance transform on a mask's box) gives exactly scipy's on the whole grid,
    for structures inside the grid, touching its borders, filling it, and for an empty mask."""
    from scipy import ndimage

    from iunet.data import _edt, random_blob

    rng = np.random.default_rng(4)
    masks = [random_blob((64, 64), rng, rng.uniform(0, 64), rng.uniform(0, 64), rng.uniform(3, 25)) for _ in range(40)]
    masks += [np.ones((64, 64), bool), np.zeros((64, 64), bool), np.pad(np.ones((60, 62), bool), ((0, 4), (2, 0)))]
    for m in masks:
        np.testing.assert_array_equal(_edt(m), ndimage.distance_transform_edt(m))


def test_dilation_on_the_box_is_the_whole_grid_dilation():
    from scipy import ndimage

    from iunet.data import _dilate, random_blob

    rng = np.random.default_rng(6)
    masks = [random_blob((64, 64), rng, rng.uniform(0, 64), rng.uniform(0, 64), rng.uniform(1, 20)) for _ in range(30)]
    masks += [np.zeros((64, 64), bool), np.ones((64, 64), bool)]
    for m in masks:
        for n in (1, 2, 5):
            np.testing.assert_array_equal(_dilate(m, n), ndimage.binary_dilation(m, iterations=n))


def test_boundary_ambiguity_measures_the_hidden_share_of_a_border():
    """``boundary_ambiguity``: 0 for a structure whose whole border shows, 1 for one drawn at the
    HU of the tissue around it, about the hidden share for one that touches a structure of its
    own HU along part of its border; NaN for a target too small to measure."""
    from iunet.data import boundary_ambiguity

    t = np.zeros((96, 96), bool)
    t[30:66, 20:50] = True
    hu = np.full((96, 96), -80.0, np.float32)
    hu[t] = 120.0
    assert boundary_ambiguity(hu, t) == 0.0
    assert boundary_ambiguity(np.full((96, 96), 120.0, np.float32), t) == 1.0
    hu[30:66, 50:80] = 125.0  # a touching structure of nearly the same HU along the right side
    share = boundary_ambiguity(hu, t)
    assert 0.15 < share < 0.45  # the right side is about a quarter of the border
    tiny = np.zeros((96, 96), bool)
    tiny[10:13, 10:13] = True
    assert np.isnan(boundary_ambiguity(hu, tiny))


def test_clear_boundary_p_draws_targets_whose_border_shows():
    """--clear-boundary-p: a plain click sample whose target's border the rendering hides is
    rendered again, so such targets become rarer than without it (the default, 0, draws as before)."""
    from iunet.data import boundary_ambiguity

    base = SampleConfig(inputs=InputConfig(grid_px=64, alpha=None, default_radius_px=3))
    assert base.clear_boundary_p == 0.0
    hidden = {}
    for p in (0.0, 1.0):
        cfg = replace(base, clear_boundary_p=p)
        vals = []
        for seed in range(40):
            rng = np.random.default_rng(seed)
            s = make_sample(synthetic_labels(64, rng), rng, cfg)
            h = boundary_ambiguity(s.hu, s.target[0] > 0.5)
            if not np.isnan(h):
                vals.append(h)
        hidden[p] = np.array(vals)
    assert len(hidden[0.0]) > 20 and len(hidden[1.0]) > 20
    assert (hidden[1.0] > 0.25).mean() < (hidden[0.0] > 0.25).mean()
    assert hidden[1.0].mean() < hidden[0.0].mean()
