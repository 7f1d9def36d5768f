import numpy as np

from iunet.data import SampleConfig, SliceBank, make_sample, render_ct, slices_from_volume, synthetic_labels, with_context


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
    cfg = SampleConfig(grid_px=64, interactions=1, max_interactions=1, alpha=None, radius_px=3)
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
