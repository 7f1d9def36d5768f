"""Load test: many simultaneous users over HTTP against `python app.py`.

Each user uploads its own image (its own size and content), clicks, exports and undoes. No
request may fail, and every answer must belong to the user who asked: the slice size, the
file name, the mask area (checked against the same model run here) and the exported mask.

The same code measures click round trips for docs/app.md (one user alone, then N users at
once, each making a bounded number of clicks); run it as a script:

    python tests/test_app_load.py --weights-dir weights --size 512 --users 16 --clicks 5

Two clients speak to the server. ``HttpUser`` does what the page's own JavaScript client does
for a click, on one kept-alive connection: POST ``queue/join``, read the session's event stream
until the result, GET the new picture; its round trips are the ones we report. ``gradio_client``
(``--client gradio_client``) opens fresh connections for every call and copies every output
file to disk, which adds its own 100–200 ms per call on this machine; the cross-talk test uses
both.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import io
import json
import tempfile
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import free_port, make_checkpoint  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
N_USERS = 16
FG = "Foreground (add)"
SIZE_ARGS = ("Dynamic: α · mask area", "1/800", 5, 40, 400, False, True)  # click size, window, no weight map, 3D clicks


@contextmanager
def app_server(weights_dir: Path, log_path: Path, extra_args: tuple[str, ...] = (), threads: int | None = None):
    """`python app.py` on a free port of 127.0.0.1; yields its URL. Fails with the log when it
    does not start, and when the log shows a traceback."""
    port = free_port()
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", IUNET_WEIGHTS_DIR=str(weights_dir))
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    with open(log_path, "w+") as log:
        proc = subprocess.Popen(
            [sys.executable, str(REPO / "app.py"), "--host", "127.0.0.1", "--port", str(port), *extra_args],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}/"
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    proc.kill()
                    log.seek(0)
                    raise RuntimeError(f"app.py did not start:\n{log.read()[-3000:]}")
                time.sleep(0.5)
        try:
            yield url
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            log.seek(0)
            text = log.read()
            assert "Traceback" not in text, text[-3000:]
            assert "HTTP Request:" not in text, "library requests are logged at INFO"


def user_image(i: int, folder: Path, size_px: int | None = None):
    """User i's 8-bit PNG with a bright disk; (path, (h, w), disk centre (y, x)).

    Default: (40 + 4i) × (50 + 3i) px, so every user's answer has its own size. With
    ``size_px``: size_px × size_px (e.g. 512 for CT-sized round trips), the disk moved per user.
    """
    from PIL import Image

    h, w = (40 + 4 * i, 50 + 3 * i) if size_px is None else (size_px, size_px)
    r = (6 + i % 3) if size_px is None else size_px // 12
    cy, cx = h // 2, w // 3 + (i % 4 if size_px is None else i)  # every user's picture differs
    yy, xx = np.mgrid[:h, :w]
    img = np.full((h, w), 60, np.uint8)
    img[(yy - cy) ** 2 + (xx - cx) ** 2 <= r**2] = 200
    path = folder / f"user_{i:02d}.png"
    Image.fromarray(img).save(path)
    return path, (h, w), (cy, cx)


def area_px(info: str) -> int:
    return int(re.search(r"Mask area:\*\* ([\d,]+) px", info).group(1).replace(",", ""))


def percentile_ms(seconds: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(seconds) * 1000.0, q))


class HttpUser:
    """One page's traffic over one kept-alive HTTP connection, as the browser sends it (Gradio's
    ``sse_v3`` protocol): upload, then per event POST ``queue/join`` with the session hash, read
    ``queue/data`` until that event's ``process_completed``, and GET each output file (the new
    picture), as the page does to show it. ``call`` returns the outputs' data, each file as a
    ``BytesIO`` of what was fetched."""

    def __init__(self, url: str):
        import httpx

        self.base = url.rstrip("/") + "/"
        self.http = httpx.Client(timeout=120)
        self.session_hash = uuid.uuid4().hex[:11]
        deps = self.http.get(self.base + "config").json()["dependencies"]
        self.api = {d["api_name"]: (d["id"], (d.get("targets") or [[None]])[0][0]) for d in deps if d.get("api_name")}
        self.prefix = self.base + "gradio_api/"

    def upload(self, path: Path) -> dict:
        with open(path, "rb") as f:
            r = self.http.post(self.prefix + "upload", files={"files": (path.name, f)})
        r.raise_for_status()
        return {"path": r.json()[0], "orig_name": path.name, "meta": {"_type": "gradio.FileData"}}

    def call(self, api_name: str, *data) -> list:
        fn, trigger = self.api[api_name]
        body = {"data": list(data), "fn_index": fn, "session_hash": self.session_hash, "event_data": None, "trigger_id": trigger}
        r = self.http.post(self.prefix + "queue/join", json=body)
        r.raise_for_status()
        event_id = r.json()["event_id"]
        out = None
        with self.http.stream("GET", self.prefix + "queue/data", params={"session_hash": self.session_hash}) as stream:
            for line in stream.iter_lines():
                if line.startswith("data:"):
                    msg = json.loads(line[5:])
                    if msg.get("event_id") == event_id and msg.get("msg") == "process_completed":
                        out = msg.get("output") or {}
                        if not msg.get("success", True):
                            raise RuntimeError(f"{api_name}: {out}")
                        break
        if out is None:
            raise RuntimeError(f"{api_name}: the event stream ended without a result")
        data = list(out["data"])
        for i, value in enumerate(data):
            if isinstance(value, dict) and value.get("url"):
                got = self.http.get(value["url"])  # the page fetches the new picture
                got.raise_for_status()
                data[i] = io.BytesIO(got.content)
        return data

    def act(self, api_name: str, *data) -> list:
        """``call`` as gradio_client sees an endpoint: the session state (first input and first
        output, kept on the server) left out."""
        return self.call(api_name, None, *data)[1:]

    def load(self, path: Path, model: str) -> list:
        return self.act("load", [self.upload(path)], model, *SIZE_ARGS)

    def close(self) -> None:
        self.http.close()


class GradioClientUser:
    """The same actions through ``gradio_client`` (which downloads output files to disk)."""

    def __init__(self, url: str):
        from gradio_client import Client

        self.client = Client(url, verbose=False)

    def act(self, api_name: str, *data):
        return self.client.predict(*data, api_name="/" + api_name)

    def load(self, path: Path, model: str):
        from gradio_client import handle_file

        return self.act("load", [handle_file(str(path))], model, *SIZE_ARGS)

    def close(self) -> None:
        self.client.close()


CLIENTS = {"http": HttpUser, "gradio_client": GradioClientUser}


def run_user(url: str, model: str, path: Path, click_yx: tuple[int, int], n_clicks: int, client: str = "http") -> dict:
    """One user: upload, ``n_clicks`` clicks near ``click_yx`` (each timed), export PNG, undo,
    through ``client`` (``http``: :class:`HttpUser`, the page's protocol; ``gradio_client``).
    Returns the click round trips (s) and the last answers (files as paths or ``BytesIO``)."""
    u = CLIENTS[client](url)
    try:
        load = u.load(path, model)
        round_trips, out = [], None
        cy, cx = click_yx
        for k in range(n_clicks):
            t0 = time.perf_counter()
            out = u.act("click", cx + (k + 1) % 3 - 1, cy + k % 2, FG, model, 40, 400)  # k = 0: (cy, cx)
            round_trips.append(time.perf_counter() - t0)
            assert "⚠️" not in out[3], out[3]
        png = u.act("export_png")
        undo = u.act("undo", model, 40, 400)
        return {"load": load, "click": out, "png": png, "undo": undo, "round_trips": round_trips}
    finally:
        u.close()


def measure(url: str, model: str, folder: Path, size_px: int, n_users: int, n_clicks: int, client: str = "http") -> dict:
    """Round trips of clicks over HTTP: one user alone, then ``n_users`` at once; ``client`` is
    ``http`` (:class:`HttpUser`, the page's protocol) or ``gradio_client``."""
    users = [user_image(i, folder, size_px) for i in range(n_users)]
    run_user(url, model, users[0][0], users[0][2], 2, client)  # warm-up (model, caches, first PNG)
    alone = run_user(url, model, users[0][0], users[0][2], n_clicks, client)["round_trips"]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(n_users) as pool:
        results = list(pool.map(lambda u: run_user(url, model, u[0], u[2], n_clicks, client), users))
    wall = time.perf_counter() - t0
    many = [t for r in results for t in r["round_trips"]]
    return {
        "one_user_p50_ms": percentile_ms(alone, 50),
        "one_user_p95_ms": percentile_ms(alone, 95),
        "users_p50_ms": percentile_ms(many, 50),
        "users_p95_ms": percentile_ms(many, 95),
        "clicks": len(many),
        "wall_s": wall,
    }


# --------------------------------------------------------------------------- the test

pytest.importorskip("gradio_client")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    weights = tmp_path_factory.mktemp("weights")
    ckpt = make_checkpoint(name="load test model", path=weights / "tiny.safetensors")
    # fp32: the expected areas are computed here in fp32, and a random model's probabilities sit
    # close to 0.5, where bf16 rounding would move pixels across the threshold
    args = ("--concurrency", "4", "--precision", "fp32")
    with app_server(weights, tmp_path_factory.mktemp("log") / "server.log", args) as url:
        yield url, ckpt


def test_sixteen_concurrent_users_without_errors_or_crosstalk(server, tmp_path):
    """Half the users speak the page's protocol (:class:`HttpUser`), half use gradio_client."""
    from PIL import Image

    from iunet.clicks import Click
    from iunet.inference import Predictor
    from iunet.io import load_ct

    url, ckpt = server
    predictor = Predictor(ckpt, device="cpu")
    users = [user_image(i, tmp_path) for i in range(N_USERS)]
    descriptions = [load_ct(p).description for p, _, _ in users]  # each user's own image, e.g. "…, 50×40, …"
    expected = [
        int((predictor.predict(load_ct(p).hu[0], [Click(cy, cx, True, 5.0)]) >= 0.5).sum()) for p, _, (cy, cx) in users
    ]

    def session(i: int) -> dict:
        path, (h, w), (cy, cx) = users[i]
        r = run_user(url, "tiny.safetensors", path, (cy, cx), 1, "http" if i % 2 == 0 else "gradio_client")  # click 0 at (cy, cx)
        load, (image, _, info, _), png, undo = r["load"], r["click"], r["png"], r["undo"]
        assert f"user_{i:02d}" in load[3] and descriptions[i] in load[2], load[2:4]
        assert descriptions[i] in info and "Clicks: 1" in info.replace("**", "")
        k = 512 // max(h, w)
        assert Image.open(image).size == (w * k, h * k)
        area = area_px(info)
        assert abs(area - expected[i]) <= max(2, expected[i] // 100), (i, area, expected[i])
        mask = np.asarray(Image.open(png[4])) > 0
        assert mask.shape == (h, w) and int(mask.sum()) == area
        assert "Undid" in undo[3] and area_px(undo[2]) == 0
        return r

    t0 = time.perf_counter()
    with ThreadPoolExecutor(N_USERS) as pool:
        results = list(pool.map(session, range(N_USERS)))
    wall = time.perf_counter() - t0
    clicks = sorted(t for r in results for t in r["round_trips"])
    print(f"\n{N_USERS} users in {wall:.1f} s; click round trip p50 {percentile_ms(clicks, 50):.0f} ms, "
          f"p95 {percentile_ms(clicks, 95):.0f} ms (tiny model)")
    assert len(results) == N_USERS


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Click round trips of app.py over HTTP: one user, then many at once.")
    p.add_argument("--weights-dir", default=str(REPO / "weights"), help="checkpoints for the server")
    p.add_argument("--model", default="iunet_agnostic3d.safetensors", help="checkpoint file name the users pick (default: the app's default)")
    p.add_argument("--size", type=int, default=512, help="image size in px (square)")
    p.add_argument("--users", type=int, default=N_USERS)
    p.add_argument("--clicks", type=int, default=5, help="clicks per user (bounded loop)")
    p.add_argument("--server-args", default="", help="extra app.py flags, e.g. '--precision fp32'")
    p.add_argument("--client", choices=sorted(CLIENTS), default="http",
                   help="http: the page's own protocol on a kept-alive connection (reported); gradio_client: for comparison")
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        with app_server(Path(a.weights_dir), Path(tmp) / "server.log", tuple(a.server_args.split())) as url:
            r = measure(url, a.model, Path(tmp), a.size, a.users, a.clicks, a.client)
    print(
        f"{a.size}² px, {a.model}, {a.client} client: one user p50 {r['one_user_p50_ms']:.0f} ms (p95 {r['one_user_p95_ms']:.0f}); "
        f"{a.users} users p50 {r['users_p50_ms']:.0f} ms, p95 {r['users_p95_ms']:.0f} ms "
        f"({r['clicks']} clicks in {r['wall_s']:.1f} s, no errors)"
    )


if __name__ == "__main__":
    main()
