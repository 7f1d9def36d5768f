import numpy as np
import pytest

from iunet.clicks import Click, ClickSize, click_radius_px, encode_clicks, geodesic_maps, geodesic_sigma_px, image_noise


def test_fixed_radius_ignores_area():
    assert click_radius_px(3700, None) == 5.0
    assert click_radius_px(3700, None, default_radius_px=2) == 2.0


def test_dynamic_radius_is_alpha_times_area_clamped():
    # docs/design.md §1: median MSD spleen slice area ~3,700 px, alpha = 1/800 -> r ~ 4.6
    assert click_radius_px(3700, 1 / 800) == pytest.approx(4.625)
    assert click_radius_px(100, 1 / 800) == 1.0  # clamped low
    assert click_radius_px(10**6, 1 / 500) == 15.0  # clamped high
    assert click_radius_px(0, 1 / 800) == 5.0  # first click: no mask yet -> default
    assert click_radius_px(None, 1 / 800, default_radius_px=3) == 3.0


def test_click_size_describe_and_radius():
    cs = ClickSize(alpha=1 / 800)
    assert cs.describe() == "dynamic α=1/800"
    assert cs.radius_for(8000) == pytest.approx(10.0)
    assert ClickSize(radius_px=2).describe() == "fixed 2 px"


def test_disk_encoding_counts_pixels_and_channels():
    maps = encode_clicks([Click(10, 10, True, 2.0), Click(3, 20, False, 1.0)], (32, 32))
    assert maps.shape == (2, 32, 32) and maps.dtype == np.float32
    assert maps[0].sum() == 13  # lattice points with y^2 + x^2 <= 4
    assert maps[1].sum() == 5  # radius 1: the centre and its 4 neighbours
    assert maps[0, 10, 10] == 1 and maps[1, 10, 10] == 0


def test_gaussian_encoding_peaks_at_centre():
    maps = encode_clicks([Click(8, 8, True, 2.0)], (17, 17), "gaussian")
    assert maps[0, 8, 8] == pytest.approx(1.0)
    assert maps[0, 8, 10] == pytest.approx(np.exp(-4 / 8))
    assert maps[1].max() == 0


def test_click_outside_image_is_refused():
    with pytest.raises(ValueError, match="outside"):
        encode_clicks([Click(40, 3, True)], (32, 32))


@pytest.mark.parametrize("args, field", [
    ((2.5, 3, True), "y"), ((2, 3.7, True), "x"), ((True, 3, True), "y"), ((2, 3, 1), "positive"),
    ((2, 3, True, 0.0), "radius_px"), ((2, 3, True, float("nan")), "radius_px"), ((2, 3, True, "5"), "radius_px"),
])
def test_click_checks_its_fields_where_it_is_made(args, field):
    with pytest.raises(ValueError, match=f"Click.{field}"):
        Click(*args)
    # numpy scalars, as robots and samplers make them, are accepted
    c = Click(np.int64(2), np.int32(3), np.bool_(True), np.float32(2.5))
    assert encode_clicks([c], (8, 8))[0, 2, 3] == 1


def test_scaled_click_maps_pixel_centres():
    c = Click(255, 0, True, 4.0).scaled(0.5, 0.5)
    assert (c.y, c.x, c.radius_px) == (127, 0, 2.0)


def test_geodesic_map_fills_the_clicked_uniform_region_and_drops_at_its_edge():
    """A click in a uniform rectangle: the map is 1 at the click, stays high across the
    rectangle and falls across its edge more than the same Euclidean distance inside would."""
    img = np.full((64, 96), 0.2, np.float32)
    img[16:48, 10:80] = 0.6  # a 32 × 70 rectangle, brighter than its surround
    maps = geodesic_maps(img, [Click(32, 45, True)], lam=300, tau_px=64)
    assert maps.shape == (2, 64, 96) and maps.dtype == np.float32
    assert maps[0, 32, 45] == pytest.approx(1.0)
    assert not maps[1].any()  # no background click
    inside_far = maps[0, 32, 75]  # 30 px away, inside
    outside_near = maps[0, 32, 88]  # 43 px away, beyond the right edge
    outside_above = maps[0, 8, 45]  # 24 px away (y), beyond the top edge: nearer than inside_far
    assert inside_far > 0.5 > outside_near
    assert inside_far > 1.5 * outside_above
    # rows are y, columns x: a click at (y, x) = (5, 90) is in the top-right corner
    corner = geodesic_maps(img, [Click(5, 90, False)])
    assert corner[1, 5, 90] == pytest.approx(1.0) and not corner[0].any()
    assert corner[1, 5, 89] > corner[1, 60, 5]


def test_geodesic_map_takes_the_nearest_click_and_refuses_outside_clicks():
    img = np.zeros((32, 32), np.float32)
    both = geodesic_maps(img, [Click(4, 4, True), Click(28, 28, True)])
    one = geodesic_maps(img, [Click(4, 4, True)])
    assert both[0, 28, 28] == pytest.approx(1.0) and one[0, 28, 28] < 1.0
    assert np.all(both[0] >= one[0] - 1e-6)
    with pytest.raises(ValueError, match="outside"):
        geodesic_maps(img, [Click(40, 3, True)])


def test_geodesic_maps_at_several_edge_weights_are_one_pair_each():
    """``lam`` a sequence: one (foreground, background) pair per edge weight, in order; the
    smaller weight's map reaches further across an edge (a dark core inside a bright organ)."""
    img = np.full((64, 64), 0.2, np.float32)
    img[12:52, 12:52] = 0.7  # an organ
    img[28:36, 28:36] = 0.1  # a dark core, where the click is
    clicks = [Click(32, 32, True), Click(2, 2, False)]
    both = geodesic_maps(img, clicks, lam=(300, 100), tau_px=64)
    assert both.shape == (4, 64, 64)
    np.testing.assert_array_equal(both[:2], geodesic_maps(img, clicks, lam=300, tau_px=64))
    np.testing.assert_array_equal(both[2:], geodesic_maps(img, clicks, lam=100, tau_px=64))
    assert both[2, 20, 20] > both[0, 20, 20] + 0.1  # the organ around the core: the soft map reaches it


def test_a_click_that_agrees_with_the_mask_stays_inside_its_side_of_the_border():
    """agreeing_radius_px: a positive click inside the mask, or a negative one outside, is drawn
    no larger than its distance to the mask's border; a correction (a positive click outside,
    a negative one inside) or a first click keeps its radius."""
    from iunet.clicks import agreeing_radius_px

    m = np.zeros((60, 60), bool)
    m[10:40, 10:40] = True
    assert agreeing_radius_px(m, 12, 25, True, 15.0) == pytest.approx(3.0)  # 3 px from the top edge's outside row
    assert agreeing_radius_px(m, 25, 25, True, 15.0) == 15.0  # deep inside: the disk stays in
    assert agreeing_radius_px(m, 25, 44, False, 15.0) == pytest.approx(5.0)  # outside, 5 px right of the mask
    assert agreeing_radius_px(m, 25, 44, True, 15.0) == 15.0  # a correction: as it was
    assert agreeing_radius_px(m, 25, 25, False, 15.0) == 15.0  # likewise
    assert agreeing_radius_px(m, 10, 25, True, 15.0) == pytest.approx(1.0)  # on the border row: the smallest
    assert agreeing_radius_px(m, 10, 25, True, 15.0, min_radius_px=2.0) == 2.0
    assert agreeing_radius_px(np.zeros_like(m), 12, 25, True, 5.0) == 5.0  # no mask yet
    assert agreeing_radius_px(m, 55, 55, False, 4.0) == 4.0  # far outside; the image border does not count
    assert agreeing_radius_px(m, 41, 41, False, 15.0) == pytest.approx(np.sqrt(8))  # diagonal from the corner (39, 39)


def test_image_noise_reads_pixel_noise_not_edges_ramps_or_clipped_pixels():
    rng = np.random.default_rng(0)
    flat = np.full((128, 128), 0.5, np.float32)
    for s in (0.005, 0.02, 0.05):
        assert image_noise(flat + rng.normal(0, s, flat.shape).astype(np.float32)) == pytest.approx(s, rel=0.1)
    assert image_noise(flat) == 0.0
    ramp = np.tile(np.linspace(0.1, 0.9, 128, dtype=np.float32), (128, 1))
    assert image_noise(ramp) < 1e-6  # a linear ramp is no noise
    # organs' edges barely move it (the median of the response, not its mean)
    organs = flat.copy()
    organs[20:60, 20:100] = 0.7
    organs[70:110, 30:90] = 0.3
    noise = rng.normal(0, 0.02, flat.shape).astype(np.float32)
    assert image_noise(organs + noise) == pytest.approx(image_noise(flat + noise), rel=0.1)
    # clipped pixels (air, bone: 0 or 1 after windowing) do not count
    half = flat + noise
    half[:, :64] = 0.0
    assert image_noise(half) == pytest.approx(0.02, rel=0.15)
    assert image_noise(np.zeros((128, 128), np.float32)) == 0.0 and image_noise(np.zeros((2, 5), np.float32)) == 0.0


def test_geodesic_maps_of_a_noisy_image_are_drawn_from_a_smoother_copy():
    """Below the noise reference the maps are the plain ones; above it the edge cost comes from
    a smoother image, so that the clicked region's map does not shrink with the noise."""
    rng = np.random.default_rng(1)
    img = np.full((96, 96), 0.3, np.float32)
    img[16:80, 16:80] = 0.5  # a 64 × 64 organ
    clean = img + rng.normal(0, 0.004, img.shape).astype(np.float32)
    noisy = img + rng.normal(0, 0.04, img.shape).astype(np.float32)
    assert geodesic_sigma_px(clean, 0.012) == 1.0 and geodesic_sigma_px(noisy, 0.0) == 1.0
    assert geodesic_sigma_px(noisy, 0.012) > 1.5 and geodesic_sigma_px(noisy, 0.012, 2.0) == pytest.approx(2 * geodesic_sigma_px(noisy, 0.012))
    click = [Click(48, 48, True)]
    np.testing.assert_array_equal(geodesic_maps(clean, click, noise_ref=0.012), geodesic_maps(clean, click))
    plain = geodesic_maps(noisy, click)[0]
    smoothed = geodesic_maps(noisy, click, noise_ref=0.012)[0]
    reference = geodesic_maps(clean, click)[0]
    inside = np.zeros(img.shape, bool)
    inside[20:76, 20:76] = True
    # the noise shrinks the plain map inside the organ; the smoothed one stays near the clean image's
    assert plain[inside].mean() < 0.8 * reference[inside].mean()
    assert abs(smoothed[inside].mean() - reference[inside].mean()) < abs(plain[inside].mean() - reference[inside].mean()) / 2
    assert smoothed[inside].mean() > 2 * smoothed[~np.pad(np.ones((80, 80), bool), 8)].mean()  # and still stops at the edge
