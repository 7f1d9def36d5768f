"""The web app in a real browser: Debian's Chromium driven by Playwright against a live server.

Uploads a DICOM file, clicks inside an object, sees the overlay change, undoes, exports the
NIfTI and reads it back, and takes a screenshot (docs/screenshot.png when IUNET_SCREENSHOT=1,
else a temporary file). Skips when /usr/bin/chromium or the playwright package is missing.
Install the browser with: apt-get install -y chromium
"""
import os
import shutil
import urllib.request
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

CHROMIUM = "/usr/bin/chromium"
from conftest import free_port, make_checkpoint  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is not installed")
playwright_sync = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import app

    weights = os.environ.get("IUNET_WEIGHTS_DIR") if os.environ.get("IUNET_SCREENSHOT") == "1" else None
    if not weights:
        weights = tmp_path_factory.mktemp("weights")
        make_checkpoint(name='browser test model', path=weights / "tiny.safetensors")
    config = app.AppConfig(weights_dir=str(weights), host="127.0.0.1", port=free_port(), concurrency=2)
    demo = app.build_demo(config)
    app.launch(demo, config, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{config.port}/"
    demo.close()


@pytest.fixture(scope="module")
def page():
    with playwright_sync.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-background-networking", "--disable-gpu", "--disable-component-update", "--no-first-run"],
        )
        pg = browser.new_page(viewport={"width": 1500, "height": 1100})
        pg.set_default_timeout(30_000)
        yield pg
        browser.close()


def click_slice_pixel(page, y: int, x: int) -> None:
    """Click the displayed image where slice pixel (y, x) is, whatever size the browser shows it at."""
    img = page.locator("#ct_image img")
    geo = img.evaluate("e => ({nw: e.naturalWidth, nh: e.naturalHeight, w: e.getBoundingClientRect().width, h: e.getBoundingClientRect().height})")
    scale = 512 // 128  # CT_small is 128 px, shown 4× larger
    f = geo["w"] / geo["nw"]
    img.click(position={"x": (x * scale + scale / 2) * f, "y": (y * scale + scale / 2) * f})


def test_upload_click_undo_export_screenshot(server, page, tmp_path):
    from pydicom.data import get_testdata_file

    expect = playwright_sync.expect
    dicom = tmp_path / "CT_small.dcm"
    shutil.copy(get_testdata_file("CT_small.dcm"), dicom)

    page.goto(server)
    page.locator("#upload input[type=file]").set_input_files(str(dicom))
    expect(page.locator("#info")).to_contain_text("128×128", timeout=60_000)
    expect(page.locator("#ct_image img")).to_be_visible()
    before = page.locator("#ct_image img").screenshot()

    # a foreground click in the spinal canal (slice pixel row 50, column 60)
    click_slice_pixel(page, 50, 60)
    expect(page.locator("#info")).to_contain_text("Clicks: 1 (1 foreground")
    expect(page.locator("#status")).to_contain_text("row 50, column 60")
    after = page.locator("#ct_image img").screenshot()
    assert after != before  # the overlay (click circle, mask) changed the picture

    page.locator("#undo").click()
    expect(page.locator("#info")).to_contain_text("Clicks: 0")
    expect(page.locator("#status")).to_contain_text("Undid the last click")

    click_slice_pixel(page, 50, 60)
    expect(page.locator("#info")).to_contain_text("Clicks: 1 (1 foreground")
    info = page.locator("#info").inner_text()
    area_px = int(info.split("Mask area:")[1].split("px")[0].strip().replace(",", ""))

    page.locator("#export_nifti").click()
    link = page.locator("#download a").first
    expect(link).to_be_attached()
    href = link.get_attribute("href")
    url = href if href.startswith("http") else server.rstrip("/") + "/" + href.lstrip("/")
    out = tmp_path / "mask.nii.gz"
    out.write_bytes(urllib.request.urlopen(url, timeout=30).read())
    import nibabel as nib

    img = nib.load(str(out))
    data = np.asarray(img.dataobj)
    assert data.shape == (128, 128, 1) and int(data.sum()) == area_px
    np.testing.assert_allclose(img.affine[:3, 3], [158.135803, 179.035797, -75.699997], atol=1e-3)

    shot = REPO / "docs" / "screenshot.png" if os.environ.get("IUNET_SCREENSHOT") == "1" else tmp_path / "screenshot.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000


def test_phantom_volume_slider_and_propagation(server, page):
    expect = playwright_sync.expect
    page.goto(server)
    page.locator("#example_phantom").click()
    expect(page.locator("#info")).to_contain_text("slice 13 / 24", timeout=60_000)  # starts in the middle
    number = page.locator("#slice input[type=number]")
    expect(number).to_be_visible()
    number.fill("5")
    number.press("Enter")
    expect(page.locator("#info")).to_contain_text("slice 6 / 24")
    page.locator("#propagate").click()  # nothing segmented yet: a message, not an error page
    expect(page.locator("#status")).to_contain_text("Segment the object on this slice first")
