"""Load test: 16 simultaneous users over HTTP (gradio_client) against `python app.py`.

Each user uploads its own image (its own size and content), clicks, exports and undoes. No
request may fail, and every answer must belong to the user who asked: the slice size, the
file name, the mask area (checked against the same model run here) and the exported mask.
"""
import os
import re
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from conftest import free_port, make_checkpoint  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
N_USERS = 16
pytest.importorskip("gradio_client")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    weights = tmp_path_factory.mktemp("weights")
    ckpt = make_checkpoint(name='load test model', path=weights / "tiny.safetensors")
    port = free_port()
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", IUNET_WEIGHTS_DIR=str(weights))
    log = open(tmp_path_factory.mktemp("log") / "server.log", "w+")
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "app.py"), "--host", "127.0.0.1", "--port", str(port), "--concurrency", "4"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 90
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                log.seek(0)
                pytest.fail(f"app.py did not start:\n{log.read()[-3000:]}")
            time.sleep(0.5)
    yield url, ckpt
    proc.terminate()
    proc.wait(timeout=20)
    log.seek(0)
    text = log.read()
    assert "Traceback" not in text, text[-3000:]


def user_image(i: int, folder: Path):
    """User i's 8-bit PNG: (40 + 4i) × (50 + 3i) px with a bright disk; its centre (y, x)."""
    from PIL import Image

    h, w = 40 + 4 * i, 50 + 3 * i
    cy, cx = h // 2, w // 3 + i % 4
    yy, xx = np.mgrid[:h, :w]
    img = np.full((h, w), 60, np.uint8)
    img[(yy - cy) ** 2 + (xx - cx) ** 2 <= (6 + i % 3) ** 2] = 200
    path = folder / f"user_{i:02d}.png"
    Image.fromarray(img).save(path)
    return path, (h, w), (cy, cx)


def area_px(info: str) -> int:
    return int(re.search(r"Mask area:\*\* ([\d,]+) px", info).group(1).replace(",", ""))


def test_sixteen_concurrent_users_without_errors_or_crosstalk(server, tmp_path):
    from gradio_client import Client, handle_file
    from PIL import Image

    from iunet.clicks import Click
    from iunet.ct_io import load_ct
    from iunet.inference import Predictor

    url, ckpt = server
    predictor = Predictor(ckpt, device="cpu")
    users = [user_image(i, tmp_path) for i in range(N_USERS)]
    descriptions = [load_ct(p).description for p, _, _ in users]  # each user's own image, e.g. "…, 50×40, …"
    expected = [
        int((predictor.predict(load_ct(p).hu[0], [Click(cy, cx, True, 5.0)]) >= 0.5).sum()) for p, _, (cy, cx) in users
    ]
    model = "tiny.safetensors"
    fg = "Foreground (add)"

    def session(i: int) -> dict:
        path, (h, w), (cy, cx) = users[i]
        t0 = time.perf_counter()
        c = Client(url, verbose=False)
        out = c.predict([handle_file(str(path))], model, "Dynamic: α · mask area", "1/800", 5, 40, 400, api_name="/load")
        assert f"user_{i:02d}" in out[3] and descriptions[i] in out[2], out[2:4]
        t1 = time.perf_counter()
        out = c.predict(cx, cy, fg, model, 40, 400, api_name="/click")
        click_s = time.perf_counter() - t1
        image, info, status = out[0], out[2], out[3]
        assert "⚠️" not in status, status
        assert descriptions[i] in info and "Clicks: 1" in info.replace("**", "")
        k = 512 // max(h, w)
        assert Image.open(image).size == (w * k, h * k)
        area = area_px(info)
        assert abs(area - expected[i]) <= max(2, expected[i] // 100), (i, area, expected[i])
        out = c.predict(api_name="/export_png")
        mask = np.asarray(Image.open(out[4])) > 0
        assert mask.shape == (h, w) and int(mask.sum()) == area
        out = c.predict(model, 40, 400, api_name="/undo")
        assert "Undid" in out[3] and area_px(out[2]) == 0
        c.close()
        return {"total_s": time.perf_counter() - t0, "click_s": click_s}

    t0 = time.perf_counter()
    with ThreadPoolExecutor(N_USERS) as pool:
        results = list(pool.map(session, range(N_USERS)))
    wall = time.perf_counter() - t0
    clicks = sorted(r["click_s"] for r in results)
    print(f"\n{N_USERS} users in {wall:.1f} s; click round trip median {clicks[len(clicks) // 2] * 1000:.0f} ms, "
          f"max {clicks[-1] * 1000:.0f} ms")
    assert len(results) == N_USERS
