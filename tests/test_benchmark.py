"""Tests of the benchmark package (python -m benchmark): fast, CPU, tiny random-weight models.

Random weights are fine here: these tests check the plumbing (robots, batching, resume, reports,
download), not accuracy. The real-data test runs when ../shared/data/Task09_Spleen_sample exists.
"""
from __future__ import annotations

import csv
import hashlib
import importlib.util
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
from dataclasses import asdict, replace
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark import datasets, download, report, runner
from benchmark.__main__ import main
from benchmark.methods import Method, seed_markers
from iunet.clicks import ClickSize
from iunet.inference import Predictor
from iunet.metrics import dice
from iunet.model import Checkpoint, InputConfig, ModelConfig, UNet, save_checkpoint
from iunet.robot import deepest_point, next_clicks

REPO = Path(__file__).resolve().parent.parent
SPLEEN_SAMPLE = REPO.parent / "shared" / "data" / "Task09_Spleen_sample"
NO_TIMING = [f for f in runner.FIELDS if f != "ms"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models on a shared CPU run fastest on one thread (two fight over the cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _tiny(path: Path, interactive: bool) -> str:
    torch.manual_seed(0)
    mc = ModelConfig(interactive=interactive, base_channels=4, depth=2)
    save_checkpoint(Checkpoint(UNet(mc), mc, InputConfig(grid_px=64)), path)
    return str(path)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> str:
    return _tiny(tmp_path_factory.mktemp("ckpt") / "iunet.safetensors", True)


@pytest.fixture(scope="module")
def unet_ckpt(tmp_path_factory) -> str:
    return _tiny(tmp_path_factory.mktemp("ckpt") / "unet.safetensors", False)


@pytest.fixture(scope="module")
def colon(tmp_path_factory) -> Path:
    """A small synthetic Task10-style folder: colon_001 … colon_005, 2 scored slices of 64² each."""
    root = datasets.make_synthetic_msd(tmp_path_factory.mktemp("data"), "colon", n_cases=5, n_slices=2, size_px=64)
    (root / "imagesTr" / "._colon_001.nii.gz").write_bytes(b"\0\5\26\7 macOS resource fork")
    return root


def _rows(path: Path) -> list[tuple]:
    return [tuple(r[f] for f in NO_TIMING) for r in runner.read_rows(path)]


def _cfg(ckpt: str, data: Path, out: Path, **kw) -> runner.RunConfig:
    base = dict(data=str(data), weights=ckpt, methods=("iunet-dynamic", "watershed"), protocols=("ritm", "paper"),
                max_clicks=3, out=str(out), batch=4)
    return runner.RunConfig(**{**base, **kw})


# ---------------------------------------------------------------------------------------
# datasets


def test_colon_naming_and_msd_layout(colon):
    cases = datasets.msd_cases(colon)
    assert [c.name for c in cases] == [f"colon_{i:03d}" for i in range(1, 6)]  # the ._ file is skipped
    assert cases[0].image.name == "colon_001.nii.gz" and cases[0].label.parent.name == "labelsTr"
    assert datasets.task_name(colon) == "synthetic (colon layout)"
    hu, gt = datasets.load_case(cases[0])
    assert hu.shape == gt.shape == (4, 64, 64) and gt.dtype == bool
    assert datasets.pick_slices(gt, "all") == [1, 2]  # the first and last slices have no target
    largest = datasets.pick_slices(gt, "largest")
    assert largest == [int(np.argmax(gt.sum((1, 2))))]
    with pytest.raises(ValueError, match="unknown case"):
        datasets.select_cases(cases, ["colon_999"])
    with pytest.raises(ValueError, match="not an MSD task folder"):
        datasets.msd_cases(colon / "imagesTr")


def test_split_files_and_natural_order(tmp_path):
    (tmp_path / "s.txt").write_text("spleen_10  # a comment\n\nspleen_2.nii.gz\n")
    assert datasets.read_split(tmp_path / "s.txt") == ["spleen_10", "spleen_2"]
    (tmp_path / "s.json").write_text(json.dumps({"train": ["a"], "test": ["spleen_3"]}))
    assert datasets.read_split(tmp_path / "s.json") == ["spleen_3"]
    assert sorted(["spleen_10", "spleen_2", "spleen_1"], key=datasets._natural_key) == ["spleen_1", "spleen_2", "spleen_10"]
    for empty in ("s_empty.txt", "s_empty.json"):  # an empty split would otherwise mean every case
        (tmp_path / empty).write_text("# nothing\n" if empty.endswith(".txt") else json.dumps({"test": []}))
        with pytest.raises(ValueError, match="names no case"):
            datasets.read_split(tmp_path / empty)


def test_cases_named_twice_run_once_and_split_errors_name_the_flag(colon, ckpt, tmp_path):
    cases = datasets.find_cases(colon)
    assert [c.name for c in datasets.select_cases(cases, ["colon_002", "colon_001", "colon_002"])] == ["colon_002", "colon_001"]
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(SystemExit, match=r"--split .*bad.json: "):
        main(["run", "--data", str(colon), "--weights", ckpt, "--split", str(tmp_path / "bad.json"), "--out", str(tmp_path / "o")])
    with pytest.raises(SystemExit, match=r"--split .*missing.txt: .*No such file"):
        main(["run", "--data", str(colon), "--weights", ckpt, "--split", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "o")])


# ---------------------------------------------------------------------------------------
# robots and methods


def _random_pair(rng) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[:96, :96]
    cy, cx, r = rng.integers(20, 76, 2).tolist() + [int(rng.integers(5, 18))]
    gt = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
    pred = np.roll(gt, tuple(rng.integers(-6, 7, 2)), (0, 1)) | (rng.random(gt.shape) < 0.002)
    return gt, pred


@pytest.mark.parametrize("protocol", ["paper", "ritm", "component"])
def test_cropped_robot_equals_whole_slice_robot(protocol):
    from iunet.robot import _next_full

    rng = np.random.default_rng(1)
    for _ in range(25):
        gt, pred = _random_pair(rng)
        clicked = [tuple(int(v) for v in np.argwhere(gt ^ pred)[0])] if (gt ^ pred).any() else []
        a = next_clicks(protocol, gt, pred, np.random.default_rng(7), clicked)
        b = _next_full(protocol, gt, pred, np.random.default_rng(7), clicked)
        assert a == b


def test_protocols_drive_tracks(ckpt):
    """ritm never clicks a pixel twice and one click per step; paper adds pairs; the same random
    clicks reach every method under paper; the recorded Dice is iunet.metrics.dice."""
    rng = np.random.default_rng(3)
    hu = rng.normal(40, 30, (64, 64)).astype(np.float32)
    gt, _ = _random_pair(rng)
    gt = gt[:64, :64]
    pred = Predictor(ckpt, device="cpu")
    cs = ClickSize(5.0, 1 / 800)
    methods = [Method("iunet-dynamic", "", pred, cs), Method("watershed", "", None, cs), Method("random-walker", "", None, cs, 64)]
    tracks = {(m.name, p): runner.SliceTrack(gt, p, runner.track_rng(0, "c", 0, p), case="c", z=0, method=m, image_hu=hu)
              for m in methods for p in ("ritm", "paper")}
    runner.click_tracks(list(tracks.values()), 4, batch=8)
    for (m, p), t in tracks.items():
        assert [r["click"] for r in t.rows] == [1, 2, 3, 4]
        assert float(t.rows[-1]["dice"]) == pytest.approx(dice(t.mask, gt), abs=1e-6)
        pts = t.clicked
        if p == "ritm":
            assert len(pts) == len(set(pts)) == t.n_clicks <= 4
            assert t.state.clicks[0].positive  # nothing predicted yet: the first error is a miss
        else:
            assert t.n_clicks == 8 and [c.positive for c in t.state.clicks[:2]] == [True, False]
    paper_clicks = {m: tracks[(m, "paper")].clicked for m in ("iunet-dynamic", "watershed", "random-walker")}
    assert len({tuple(v) for v in paper_clicks.values()}) == 1
    # deterministic: the same seed gives the same rows again
    again = runner.SliceTrack(gt, "paper", runner.track_rng(0, "c", 0, "paper"), case="c", z=0, method=methods[1], image_hu=hu)
    runner.click_tracks([again], 4, batch=8)
    assert [r["dice"] for r in again.rows] == [r["dice"] for r in tracks[("watershed", "paper")].rows]


def test_seed_markers_border_and_latest_click_wins():
    from iunet.clicks import Click

    m = seed_markers([Click(10, 10, True, 3), Click(10, 12, False, 1)], (32, 32))
    assert m[0].tolist() == [2] * 32 and m[:, -1].tolist() == [2] * 32
    assert m[10, 10] == 1 and m[10, 12] == 2 and m[10, 8] == 1 and m[20, 20] == 0


# ---------------------------------------------------------------------------------------
# metrics summary from a hand-made CSV


def test_summary_from_hand_made_csv(tmp_path):
    # slice 1: Dice .5, .85, .95 ; slice 2: .9, .9, .9 (both of case A, 10 gt pixels each)
    curves = {1: [(5, 10, 10), (8.5, 10, 10), (9.5, 10, 10)], 2: [(9, 10, 10)] * 3}
    rows = []
    for z, pts in curves.items():
        for k, (inter, pred, gt) in enumerate(pts, start=1):
            rows.append({"case": "A", "slice": z, "method": "iunet-dynamic", "protocol": "ritm", "click": k, "n_clicks": k,
                         "dice": 2 * inter / (pred + gt), "ms": 10.0, "inter_px": inter, "pred_px": pred, "gt_px": gt})
    rows += [{**r, "protocol": "paper"} for r in rows]  # the same curves under the paper's robot
    with open(tmp_path / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, runner.FIELDS)
        w.writeheader()
        w.writerows(rows)
    s = report.stats(report.curves(runner.read_rows(tmp_path / "results.csv"))[("iunet-dynamic", "ritm")])
    np.testing.assert_allclose(s["dice"], [0.7, 0.875, 0.925])
    assert s["noc"][0.80] == (1.5, 0) and s["noc"][0.90] == (2.0, 0)
    assert s["noc"][0.85] == (1.5, 0)
    assert s["auc"] == pytest.approx((0.7875 + 0.9) / 2)
    np.testing.assert_allclose(s["dice3d"]["A"], [14 / 20, 17.5 / 20, 18.5 / 20])
    assert s["ms_per_click"] == pytest.approx(60 / 6)
    meta = {"config": {"data": "x", "cases": ["A"], "slices": "all", "max_clicks": 3, "alpha": 1 / 800, "radius_px": 5.0,
                       "seed": 0, "protocols": ["ritm", "paper"], "methods": ["iunet-dynamic"]}, "task": "Spleen", "synthetic": False}
    (tmp_path / "run.json").write_text(json.dumps(meta))
    md, png = report.write_reports(tmp_path)
    text = md.read_text()
    assert "| iunet-dynamic | Spleen | 70.00 | 87.50 | n/a | n/a | n/a |" in text
    assert "1.50 (0/2)" in text and "2.00 (0/2)" in text and "0.8438" in text
    # the paper's Table II rows for Spleen, beside the paper's robot only (its k counts pairs)
    assert text.count("*75.83*") == 1 and text.index("*75.83*") > text.index("## Robot `paper`") and png.stat().st_size > 1000
    assert "its values are beside the `paper` robot only" in text.split("## Robot `paper`")[0]
    assert "| A | 70.00 / 70.00 → 92.50 / 92.50 |" in text  # precision / recall, pixels pooled


def test_precision_and_recall_tell_a_leak_from_a_miss():
    arrays = lambda **kw: {k: np.array(v, float) for k, v in kw.items()}  # noqa: E731
    s = report.stats({("leak", 0): arrays(dice=[.5, .9], ms=[1, 1], n_clicks=[1, 2], inter=[10, 9], pred=[30, 10], gt=[10, 10]),
                      ("miss", 0): arrays(dice=[0, .5], ms=[1, 1], n_clicks=[1, 2], inter=[0, 2], pred=[0, 2], gt=[6, 6])})
    np.testing.assert_allclose(s["precision"]["leak"], [1 / 3, 0.9])
    np.testing.assert_allclose(s["recall"]["leak"], [1.0, 0.9])
    assert np.isnan(s["precision"]["miss"][0]) and s["recall"]["miss"][1] == pytest.approx(1 / 3)
    lines = report.precision_recall_lines({"m": s}, "pixels")
    assert "| leak | 33.33 / 100.00 → 90.00 / 90.00 |" in lines and "| miss | – → 100.00 / 33.33 |" in lines


def test_noc_counts_failures():
    s = report.stats({("A", 0): {k: np.array(v, float) for k, v in
                                 dict(dice=[.1, .2, .3], ms=[1, 1, 1], n_clicks=[1, 2, 3], inter=[1, 2, 3], pred=[9, 9, 9], gt=[9, 9, 9]).items()}})
    assert s["noc"][0.80] == (3.0, 1)


# ---------------------------------------------------------------------------------------
# runs: end to end, resume


def test_end_to_end_synthetic_default(ckpt, unet_ckpt, tmp_path, capsys):
    out = tmp_path / "run"
    main(["run", "--weights", ckpt, "--unet-weights", unet_ckpt, "--max-clicks", "2", "--protocols", "ritm", "paper",
          "--out", str(out), "--batch", "8", "--rw-grid-px", "64"])
    printed = capsys.readouterr().out
    assert "SYNTHETIC DATA" in printed
    for name in ("results.csv", "summary.md", "dice_vs_clicks.png", "run.json", "split.json"):
        assert (out / name).stat().st_size > 0, name
    rows = runner.read_rows(out / "results.csv")
    n_slices = 3 * 4  # make_synthetic_msd's defaults: 3 cases × 4 target slices
    assert len(rows) == n_slices * 5 * 2 * 2  # slices × methods × protocols × clicks
    assert {r["method"] for r in rows} == set(runner.DEFAULT_METHODS)
    auto = [r for r in rows if r["method"] == "unet-auto"]
    assert all(r["n_clicks"] == "0" for r in auto) and all(0 <= float(r["dice"]) <= 1 for r in rows)
    meta = json.loads((out / "run.json").read_text())
    assert meta["synthetic"] and meta["status"] == "complete" and meta["environment"]["torch"]
    summary = (out / "summary.md").read_text()
    assert "SYNTHETIC DATA" in summary
    assert f"Checkpoints: IU-Net `{Path(ckpt).name}`" in summary and f"U-Net `{Path(unet_ckpt).name}`" in summary
    assert json.loads((out / "split.json").read_text())["test"] == ["colon_001", "colon_002", "colon_003"]


def test_resume_after_interruption_has_no_missing_or_duplicate_rows(ckpt, colon, tmp_path, monkeypatch):
    full = runner.run(_cfg(ckpt, colon, tmp_path / "full"))
    expected = _rows(full / "results.csv")
    assert len(expected) == len(set(expected)) == 5 * 2 * 2 * 2 * 3
    # kill while the third case's rows are half written (before it is marked done)
    real_append, calls = runner.append_rows, []

    def dying_append(out, rows, cases):
        calls.append(cases)
        if len(calls) == 3:
            with open(out / "results.csv", "a") as f:
                f.write("colon_003,1,iunet-dynamic,ritm,1,1,0.5")  # a line cut short
            raise KeyboardInterrupt
        real_append(out, rows, cases)

    monkeypatch.setattr(runner, "append_rows", dying_append)
    with pytest.raises(SystemExit, match="interrupted: 2 of 5 cases done .*run the same command again to resume"):
        runner.run(_cfg(ckpt, colon, tmp_path / "part"))  # Ctrl-C: one line, not a traceback
    monkeypatch.setattr(runner, "append_rows", real_append)
    assert (tmp_path / "part" / "cases_done.txt").read_text().split() == ["colon_001", "colon_002"]
    meta = json.loads((tmp_path / "part" / "run.json").read_text())
    assert meta["status"] == "interrupted"
    # resuming on another set-up would mix the timings of the cases done with the new ones
    with pytest.raises(SystemExit, match=r"another set-up \(batch 4 → 3\)"):
        runner.run(_cfg(ckpt, colon, tmp_path / "part", resume=True, batch=3))
    if meta["environment"].get("git_commit"):  # (a checkout with git) at another commit: refused too
        other = dict(meta, environment=dict(meta["environment"], git_commit="0" * 40))
        (tmp_path / "part" / "run.json").write_text(json.dumps(other))
        with pytest.raises(SystemExit, match=r"another set-up \(git_commit '0{40}' → "):
            runner.run(_cfg(ckpt, colon, tmp_path / "part", resume=True))
        (tmp_path / "part" / "run.json").write_text(json.dumps(meta))
    runner.run(_cfg(ckpt, colon, tmp_path / "part", resume=True))
    assert _rows(tmp_path / "part" / "results.csv") == expected
    done_meta = json.loads((tmp_path / "part" / "run.json").read_text())
    assert done_meta["status"] == "complete" and done_meta["started"] == meta["started"]
    runner.run(_cfg(ckpt, colon, tmp_path / "part", resume=True))  # all done: the reports only, run.json kept
    assert json.loads((tmp_path / "part" / "run.json").read_text()) == done_meta
    import shutil

    same = shutil.copy(ckpt, tmp_path / "same_weights.safetensors")  # the same checkpoint by another path
    runner.run(_cfg(str(same), colon, tmp_path / "part", resume=True))
    # another configuration in the same folder is refused, not mixed
    with pytest.raises(SystemExit, match="another configuration"):
        runner.run(_cfg(ckpt, colon, tmp_path / "part", max_clicks=2))


def test_a_selection_without_slices_says_why(ckpt, colon, tmp_path):
    with pytest.raises(SystemExit, match=r"nothing to score: .*--min-area-px 1000000"):
        runner.run(_cfg(ckpt, colon, tmp_path / "none", min_area_px=1_000_000))
    assert json.loads((tmp_path / "none" / "run.json").read_text())["status"] == "complete"


def test_resume_after_sigkill_of_a_subprocess(ckpt, colon, tmp_path):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "benchmark", "run", "--data", str(colon), "--weights", ckpt, "--max-clicks", "3",
           "--methods", "iunet-dynamic", "random-walker", "--protocols", "ritm", "--rw-grid-px", "96", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    done = out / "cases_done.txt"
    t0 = time.time()
    while proc.poll() is None and time.time() - t0 < 40 and not (done.exists() and done.read_text().strip()):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL  # killed mid-way, after its first case and before the end
    subprocess.run(cmd, cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows = _rows(out / "results.csv")
    keys = [r[:5] for r in rows]
    assert len(keys) == len(set(keys)) == 5 * 2 * 2 * 3
    assert sorted(done.read_text().split()) == [f"colon_{i:03d}" for i in range(1, 6)]


def test_missing_weights_and_bad_folder_fail_clearly(ckpt, colon, tmp_path):
    with pytest.raises(SystemExit, match="not an MSD task folder"):
        runner.run(_cfg(ckpt, tmp_path, tmp_path / "o"))
    with pytest.raises(SystemExit, match="expected an automatic U-Net"):
        runner.run(runner.RunConfig(data=str(colon), weights=ckpt, unet_weights=ckpt, methods=("unet-auto",), max_clicks=1, out=str(tmp_path / "o2")))


@pytest.mark.skipif(not SPLEEN_SAMPLE.is_dir(), reason="real MSD spleen sample not present")
def test_real_spleen_sample_largest_slice(ckpt, tmp_path):
    out = runner.run(runner.RunConfig(
        data=str(SPLEEN_SAMPLE), weights=ckpt, methods=("iunet-dynamic", "watershed"), protocols=("ritm",),
        max_clicks=3, slices="largest", out=str(tmp_path / "spleen")))
    rows = runner.read_rows(out / "results.csv")
    assert len(rows) == 2 * 3 and {r["case"] for r in rows} == {"spleen_8"}
    assert int(rows[0]["gt_px"]) > 1000  # the spleen's largest slice, 512² display orientation
    ws = [float(r["dice"]) for r in rows if r["method"] == "watershed"]
    assert ws[-1] > 0.5  # three corrective clicks on real CT: the classical baseline is sane
    assert "Spleen" in (out / "summary.md").read_text()


# ---------------------------------------------------------------------------------------
# download


def _tar_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class _Handler(BaseHTTPRequestHandler):
    """Serves one payload; honours Range when asked; cuts the first response short when asked."""

    def __init__(self, state, *a, **kw):
        self.state = state
        super().__init__(*a, **kw)

    def do_GET(self):  # noqa: N802
        st, payload = self.state, self.state["payload"]
        st["ranges"].append(self.headers.get("Range"))
        rng = self.headers.get("Range") if st["ranges_ok"] else None
        start = int(rng.split("=")[1].split("-")[0]) if rng else 0
        body = payload[start:]
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(payload) - 1}/{len(payload)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if st["cut"]:
            st["cut"] -= 1
            self.wfile.write(body[: len(body) // 3])
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *a):
        pass


@pytest.fixture()
def server():
    payload = _tar_bytes({
        "Task99_Tiny/dataset.json": b'{"name": "Tiny"}',
        "Task99_Tiny/imagesTr/tiny_1.nii.gz": np.random.default_rng(0).bytes(300_000),
        "Task99_Tiny/imagesTr/._tiny_1.nii.gz": b"resource fork",
    })
    state = {"payload": payload, "ranges": [], "ranges_ok": True, "cut": 0}
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Handler, state))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    state["url"] = f"http://127.0.0.1:{httpd.server_address[1]}/Task99_Tiny.tar"
    state["md5"] = hashlib.md5(payload).hexdigest()
    yield state
    httpd.shutdown()
    httpd.server_close()


def test_download_resumes_with_range_after_interruption(server, tmp_path, capsys):
    server["cut"] = 1
    with pytest.raises(download.DownloadError, match="run the same command again to resume"):
        download.fetch_task(tmp_path, url=server["url"], md5=server["md5"], retries=0)
    part = tmp_path / "Task99_Tiny.tar.part"
    assert 0 < part.stat().st_size < len(server["payload"])
    main(["download", "--url", server["url"], "--md5", server["md5"], "--dest", str(tmp_path), "--retries", "0"])
    assert server["ranges"][-1] == f"bytes={len(server['payload']) // 3}-"
    assert (tmp_path / "Task99_Tiny" / "dataset.json").read_text() == '{"name": "Tiny"}'
    assert (tmp_path / "Task99_Tiny" / "imagesTr" / "tiny_1.nii.gz").stat().st_size == 300_000
    assert not (tmp_path / "Task99_Tiny" / "imagesTr" / "._tiny_1.nii.gz").exists()
    assert not part.exists() and not (tmp_path / "Task99_Tiny.tar").exists()
    assert "extracted:" in capsys.readouterr().out


def test_download_retries_automatically_and_restarts_without_range_support(server, tmp_path):
    server["cut"], server["ranges_ok"] = 1, False
    download.fetch_task(tmp_path, url=server["url"], md5=server["md5"], retries=1)
    assert server["ranges"][0] is None and server["ranges"][1] is not None  # asked to resume, got the whole file
    assert (tmp_path / "Task99_Tiny" / "dataset.json").exists()


def test_download_bad_checksum_fails_and_deletes(server, tmp_path):
    with pytest.raises(SystemExit, match="checksum mismatch"):
        main(["download", "--url", server["url"], "--md5", "0" * 32, "--dest", str(tmp_path)])
    assert not list(tmp_path.glob("Task99_Tiny*"))


def test_download_refuses_unsafe_archive_via_file_url(tmp_path):
    bad = tmp_path / "evil.tar"
    bad.write_bytes(_tar_bytes({"ok/a.txt": b"a", "../escaped.txt": b"x"}))
    dest = tmp_path / "dest"
    with pytest.raises(download.DownloadError, match="could not extract"):
        download.fetch_task(dest, url=bad.as_uri(), md5=hashlib.md5(bad.read_bytes()).hexdigest())
    assert not (tmp_path / "escaped.txt").exists() and not (dest / "ok").exists()


def test_task_table_matches_monai():
    assert download.TASKS["spleen"][1:] == ("https://msd-for-monai.s3-us-west-2.amazonaws.com/Task09_Spleen.tar", "410d4a301da4e5b2f6f86ec3ddba524e")
    assert download.TASKS["colon"][1:] == ("https://msd-for-monai.s3-us-west-2.amazonaws.com/Task10_Colon.tar", "bad7a188931dc2f6acf72b08eb6202d0")


# ---------------------------------------------------------------------------------------
# speed and ablation (plumbing)


def test_speed_command(ckpt, tmp_path):
    main(["speed", "--weights", ckpt, "--devices", "cpu", "--clicks", "4", "--batch-sizes", "1", "2", "--repeats", "1", "--out", str(tmp_path)])
    rec = json.loads((tmp_path / "speed.json").read_text())["records"][0]
    assert rec["latency_p95_ms"] >= rec["latency_p50_ms"] > 0
    assert set(rec["batches"]) == {"1", "2"} and rec["benchmark_vs_forward"] > 0
    assert rec["zoomed_first_p95_ms"] >= rec["zoomed_first_p50_ms"] > 0 and rec["first_p95_ms"] >= rec["first_p50_ms"] > 0
    md = (tmp_path / "speed.md").read_text()
    assert "p50 / p95" in md and "| first click p50 / p95 (ms) | first click zoomed out" in md


def test_zoomed_first_click_timing_makes_the_zoomed_out_pass(ckpt, monkeypatch):
    from benchmark.speed import first_click_ms, timing_slice
    from iunet.inference import Predictor

    pred = Predictor(ckpt, device="cpu")
    views = []
    real = Predictor.prepare_zoomed_out
    monkeypatch.setattr(Predictor, "prepare_zoomed_out", lambda self, *a: views.append(a) or real(self, *a))
    hu, gt = timing_slice(size_px=128)
    from iunet.inference import ZoomOut

    refined = []
    real_refined = ZoomOut.refined
    monkeypatch.setattr(ZoomOut, "refined", lambda self, *a, **k: refined.append(self.refine) or real_refined(self, *a, **k))
    ms = first_click_ms(pred, hu, gt, 3, warmup=1)
    assert len(ms) == 3 and (ms > 0).all() and len(views) == 4  # every first click, the warm-up's too
    views.clear()
    ms = first_click_ms(pred, hu, gt, 3, warmup=1, zoomed=False)
    assert len(ms) == 3 and not views and refined == [True] * 4  # the full view, refined (zoomed out: in ZoomOut.predict)


def test_probe_samples_are_the_kinds_they_name_and_the_command_writes_a_table(ckpt, tmp_path):
    from benchmark import probes

    from scipy import ndimage

    from iunet.data import slices_from_volume

    vol = np.zeros((10, 128, 128), np.int16)
    vol[1:9, 30:90, 20:60] = 1
    vol[1:9, 30:90, 60:100] = 2  # touches 1: the leak probe's previous masks spill into it
    volume_slices = slices_from_volume(vol, 128, spacing_z_mm=3.0)
    for kind in probes.KINDS:
        src = volume_slices if kind in ("leak", "undo", "carry", "end") else None
        a, b = probes.probe_samples(kind, src, 3, seed=2, grid_px=128), probes.probe_samples(kind, src, 3, seed=2, grid_px=128)
        for (hu, c, prev, t, ph), (hu2, c2, prev2, t2, ph2) in zip(a, b):  # one seed: the same samples for every weights file
            np.testing.assert_array_equal(hu, hu2)
            assert c == c2 and (t == t2).all()
            assert (ph is None) == (kind not in probes.CARRIED_KINDS)  # the neighbour's image, for 2.5D models
            if kind in ("carry", "end"):  # no click; a neighbour's mask, the structure there or ended
                assert c is None and prev.any() and ph.shape == hu.shape and (prev == prev2).all()
                assert t.any() == (kind == "carry")
                continue
            if kind == "leak":  # no click; the previous mask reaches well beyond the target
                assert c is None and (prev == prev2).all() and ph.shape == hu.shape and (ph == ph2).all()
                assert (prev & ~ndimage.binary_dilation(t, iterations=probes.LEAK_MARGIN_PX)).sum() >= probes.MIN_LEAK_PX
                continue
            if kind == "undo":  # the previous mask holds the target and a leak; the last click is on the leak
                assert isinstance(c, tuple) and not (t & ~prev).any()
                assert (prev & ~ndimage.binary_dilation(t, iterations=probes.LEAK_MARGIN_PX)).sum() >= probes.MIN_LEAK_PX
                assert not c[-1].positive and (prev & ~t)[c[-1].y, c[-1].x] and all(k.positive and t[k.y, k.x] for k in c[:-1])
                continue
            assert prev is None and t[c.y, c.x]  # the first click lies on the target
            if kind == "sinus":  # in the organ's darker core, the target the whole organ
                assert t.sum() >= probes.MIN_SINUS_ORGAN_PX and hu[c.y, c.x] < np.median(hu[t]) - 25
            if kind == "wide-sinus":  # a large organ, whose darker core is a fair share of it
                assert t.sum() >= probes.MIN_SINUS_ORGAN_PX and (hu[t] < np.median(hu[t]) - 40).mean() > 0.05
            if kind == "organ":  # a plain first click at the structure's deepest point
                assert (c.y, c.x) == deepest_point(t)
    for kind in probes.CARRIED_KINDS:
        with pytest.raises(ValueError, match="label volumes"):
            probes.probe_samples(kind, None, 1, seed=0)
    main(["probes", "--weights", ckpt, "--kinds", "vessel", "lesion", "--samples", "2", "--out", str(tmp_path)])
    rows = list(csv.DictReader(open(tmp_path / "probes.csv")))
    assert [(r["kind"], r["weights"], r["samples"]) for r in rows] == [("vessel", ckpt, "2"), ("lesion", ckpt, "2")]
    assert all(0.0 <= float(r["dice_mean"]) <= 1.0 for r in rows)
    with pytest.raises(SystemExit, match="--labels"):
        main(["probes", "--weights", ckpt, "--kinds", "leak"])
    if importlib.util.find_spec("onnxruntime") and importlib.util.find_spec("onnx"):  # the same Dice in ONNX Runtime
        main(["probes", "--weights", ckpt, "--kinds", "vessel", "lesion", "--samples", "2", "--runtime", "onnx", "--out", str(tmp_path / "onnx")])
        onnx_rows = list(csv.DictReader(open(tmp_path / "onnx" / "probes.csv")))
        assert [r["kind"] for r in onnx_rows] == ["vessel", "lesion"]
        for r, o in zip(rows, onnx_rows):
            assert abs(float(r["dice_mean"]) - float(o["dice_mean"])) < 1e-3


@pytest.fixture(scope="module")
def geo_ckpt(tmp_path_factory) -> str:
    torch.manual_seed(0)
    mc = ModelConfig(base_channels=4, depth=2, geodesic=True)
    path = tmp_path_factory.mktemp("ckpt") / "geo.safetensors"
    save_checkpoint(Checkpoint(UNet(mc), mc, InputConfig(grid_px=64)), path)
    return str(path)


def test_geodesic_lambda_override_in_probes_and_run(geo_ckpt, ckpt, colon, tmp_path, monkeypatch):
    """``--geodesic-lambda``: probes show the same samples at each λ (the checkpoint's own λ gives
    the rows of a run without the flag); a run draws its maps at that λ, records it in its
    identity and summary, and leaves the identity of runs without it as it was."""
    own = InputConfig().geodesic_lambda
    main(["probes", "--weights", geo_ckpt, "--kinds", "organ", "--samples", "2", "--out", str(tmp_path / "p0")])
    main(["probes", "--weights", geo_ckpt, "--kinds", "organ", "--samples", "2", "--geodesic-lambda", str(own), "10",
          "--out", str(tmp_path / "p1")])
    plain = list(csv.DictReader(open(tmp_path / "p0" / "probes.csv")))
    rows = list(csv.DictReader(open(tmp_path / "p1" / "probes.csv")))
    assert [float(r["geodesic_lambda"]) for r in rows] == [own, 10.0] and plain[0]["geodesic_lambda"] == str(own)
    assert rows[0]["dice_mean"] == plain[0]["dice_mean"]
    with pytest.raises(SystemExit, match="no geodesic click maps"):
        main(["probes", "--weights", ckpt, "--kinds", "organ", "--samples", "1", "--geodesic-lambda", "10"])
    import iunet.inference
    from iunet.clicks import geodesic_cost

    seen = []

    def spy(image, lam, *a, **k):
        seen.append(lam)
        return geodesic_cost(image, lam, *a, **k)

    monkeypatch.setattr(iunet.inference, "geodesic_cost", spy)
    out = runner.run(_cfg(geo_ckpt, colon, tmp_path / "r", methods=("iunet-dynamic",), protocols=("ritm",), max_clicks=1,
                          geodesic_lambda=25.0, cases=("colon_001",)))
    assert seen and set(seen) == {25.0}  # every cost map drawn at the override
    meta = json.loads((out / "run.json").read_text())
    assert meta["config"]["geodesic_lambda"] == 25.0 and "λ = 25" in (out / "summary.md").read_text()
    assert "geodesic_lambda" not in runner._identity(_cfg(geo_ckpt, colon, tmp_path / "x"), ["colon_001"])
    with pytest.raises(SystemExit, match="no geodesic click maps"):
        runner.run(_cfg(ckpt, colon, tmp_path / "r2", methods=("iunet-dynamic",), protocols=("ritm",), max_clicks=1,
                        geodesic_lambda=25.0, cases=("colon_001",)))


def test_geodesic_noise_ref_override_in_run(geo_ckpt, ckpt, colon, tmp_path, monkeypatch):
    """``--geodesic-noise-ref``: a run draws its maps with that noise reference (0: the 1 px blur
    whatever the noise), records it in its identity and summary, and runs without it keep theirs."""
    import iunet.inference
    from iunet.clicks import geodesic_cost

    seen = []

    def spy(image, lam, *a, **k):
        seen.append(k.get("noise_ref"))
        return geodesic_cost(image, lam, *a, **k)

    monkeypatch.setattr(iunet.inference, "geodesic_cost", spy)
    runner.run(_cfg(geo_ckpt, colon, tmp_path / "own", methods=("iunet-dynamic",), protocols=("ritm",), max_clicks=1, cases=("colon_001",)))
    assert seen and set(seen) == {InputConfig().geodesic_noise_ref}  # the checkpoint's (the default)
    seen.clear()
    main(["run", "--data", str(colon), "--weights", geo_ckpt, "--methods", "iunet-dynamic", "--protocols", "ritm",
          "--max-clicks", "1", "--cases", "colon_001", "--geodesic-noise-ref", "0", "--out", str(tmp_path / "off")])
    assert seen and set(seen) == {0.0}
    meta = json.loads((tmp_path / "off" / "run.json").read_text())
    assert meta["config"]["geodesic_noise_ref"] == 0.0 and "noise reference 0" in (tmp_path / "off" / "summary.md").read_text()
    assert "geodesic_noise_ref" not in runner._identity(_cfg(geo_ckpt, colon, tmp_path / "x"), ["colon_001"])
    for bad, model in (("-1", geo_ckpt), ("0", ckpt)):
        with pytest.raises(SystemExit, match="no geodesic click maps|>= 0"):
            main(["run", "--data", str(colon), "--weights", model, "--methods", "iunet-dynamic", "--protocols", "ritm",
                  "--max-clicks", "1", "--cases", "colon_001", "--geodesic-noise-ref", bad, "--out", str(tmp_path / f"bad{bad}")])


def test_ablation_trains_nine_variants_and_prints_table1(tmp_path, monkeypatch, capsys):
    import iunet.train

    trained = []

    def fake_train(cfg):  # a tiny untrained checkpoint with the variant's config, instead of training
        trained.append(cfg)
        mc = ModelConfig(interactive=cfg.interactive, base_channels=4, depth=2)
        ic = replace(cfg.inputs, grid_px=64)
        return save_checkpoint(Checkpoint(UNet(mc), mc, ic, json.loads(json.dumps(asdict(cfg)))), Path(cfg.out) / "best.safetensors")

    monkeypatch.setattr(iunet.train, "train", fake_train)
    args = ["ablation", "--out", str(tmp_path), "--synthetic-cases", "1", "--device", "cpu"]
    main(args)
    assert [(c.interactive, c.loss, c.click_weights, c.inputs.default_radius_px, c.inputs.alpha) for c in trained] == [
        (False, "dice", "none", 5.0, None), (True, "dice", "none", 5.0, None), (True, "wdice", "none", 5.0, None),
        (True, "wdice", "gaussian", 5.0, None), (True, "wdice", "equal", 5.0, None), (True, "wdice", "equal", 2.0, None),
        (True, "wdice", "equal", 10.0, None), (True, "wdice", "equal", 5.0, 1 / 500), (True, "wdice", "equal", 5.0, 1 / 800)]
    table = (tmp_path / "table1.md").read_text()
    assert table.count("\n| ") == 10 and "75.83" in table and "63.91" in table and "SYNTHETIC" in table
    main(args)  # matching checkpoints are reused, not trained again
    assert len(trained) == 9 and "reusing" in capsys.readouterr().out


def test_ablation_reuses_checkpoints_written_before_inputs_were_nested(tmp_path):
    """A checkpoint whose train_config has the input settings flat (the layout before
    TrainConfig.inputs) is recognised as the same training; another click size is not."""
    from benchmark.ablation import VARIANTS, _same_training, variant_config
    from iunet.model import read_header
    from iunet.train import TrainConfig

    cfg = variant_config(TrainConfig(inputs=InputConfig(grid_px=64)), VARIANTS[7][3], out=str(tmp_path))
    assert (cfg.inputs.alpha, cfg.inputs.default_radius_px, cfg.inputs.grid_px) == (1 / 500, 5.0, 64)
    mc = ModelConfig(base_channels=4, depth=2)
    tc = json.loads(json.dumps(asdict(cfg)))
    inputs = tc.pop("inputs")
    old = {**tc, "grid_px": inputs["grid_px"], "level_hu": inputs["level_hu"], "width_hu": inputs["width_hu"],
           "radius_px": inputs["default_radius_px"], "alpha": inputs["alpha"]}
    path = save_checkpoint(Checkpoint(UNet(mc), mc, cfg.inputs, old), tmp_path / "old.safetensors")
    assert "inputs" not in read_header(path)["train_config"] and _same_training(path, cfg)
    assert not _same_training(path, replace(cfg, inputs=replace(cfg.inputs, alpha=1 / 800)))
    new = save_checkpoint(Checkpoint(UNet(mc), mc, cfg.inputs, json.loads(json.dumps(asdict(cfg)))), tmp_path / "new.safetensors")
    assert _same_training(new, cfg) and not _same_training(new, replace(cfg, inputs=replace(cfg.inputs, grid_px=128)))


# ---------------------------------------------------------------------------------------
# one patient with a mask per structure (3D-IRCADb layout), and the volume protocol


def _write_nifti(path: Path, arr_zyx: np.ndarray, spacing=(0.8, 0.8, 2.5), dtype=np.int16) -> None:
    import nibabel as nib

    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])  # display orientation, as make_synthetic_msd
    nib.save(nib.Nifti1Image(arr_zyx.transpose(2, 1, 0).astype(dtype), affine), str(path))


@pytest.fixture(scope="module")
def patient(tmp_path_factory) -> Path:
    """``pat/ct.nii.gz`` + ``pat/masks/{ball,slab}.nii.gz``: two structures on one 12 × 48² CT."""
    root = tmp_path_factory.mktemp("structures") / "pat"
    (root / "masks").mkdir(parents=True)
    zz, yy, xx = np.mgrid[:12, :48, :48]
    ball = ((zz - 6) * 2.5) ** 2 + ((yy - 20) * 0.8) ** 2 + ((xx - 24) * 0.8) ** 2 <= 9.0 ** 2
    slab = (zz >= 3) & (zz <= 4) & (yy >= 34) & (yy < 42) & (xx >= 8) & (xx < 40)
    hu = np.full(ball.shape, -80.0) + 140.0 * ball + 300.0 * slab
    _write_nifti(root / "ct.nii.gz", hu)
    _write_nifti(root / "masks" / "ball.nii.gz", ball, dtype=np.uint8)
    _write_nifti(root / "masks" / "slab.nii.gz", slab, dtype=np.uint8)
    return root


def test_structure_layout_nifti_masks(patient):
    cases = datasets.find_cases(patient)
    assert [c.name for c in cases] == ["pat:ball", "pat:slab"] and {c.structure for c in cases} == {"ball", "slab"}
    hu, gt, spacing = datasets.load_volume(cases[1])
    assert hu.shape == gt.shape == (12, 48, 48) and spacing == pytest.approx((2.5, 0.8, 0.8))
    assert gt.sum() == 2 * 8 * 32 and np.nonzero(gt.any((1, 2)))[0].tolist() == [3, 4]
    with pytest.raises(ValueError, match="single-structure mask"):
        datasets.load_volume(cases[0], label_ids=(1,))
    assert datasets.select_cases(cases, ["pat:slab"]) == [cases[1]]


def test_structure_layout_nrrd_and_metaimage(patient, tmp_path):
    """The same patient as 3D Slicer / ITK files: ct.mha, masks as .nrrd, a detached .nhdr, and a
    .zip of .mha masks; the volumes and targets are the NIfTI patient's."""
    import shutil

    import SimpleITK as sitk

    root = tmp_path / "slicer_pat"
    (root / "masks").mkdir(parents=True)
    sitk.WriteImage(sitk.ReadImage(str(patient / "ct.nii.gz")), str(root / "ct.mha"), True)
    sitk.WriteImage(sitk.ReadImage(str(patient / "masks" / "ball.nii.gz")), str(root / "masks" / "ball.nrrd"), True)
    sitk.WriteImage(sitk.ReadImage(str(patient / "masks" / "slab.nii.gz")), str(root / "masks" / "slab.nhdr"), True)
    cases = datasets.find_cases(root)
    assert [c.name for c in cases] == ["slicer_pat:ball", "slicer_pat:slab"]
    ref = {c.structure: datasets.load_volume(c) for c in datasets.find_cases(patient)}
    for c in cases:
        hu, gt, spacing = datasets.load_volume(c)
        np.testing.assert_array_equal(hu, ref[c.structure][0])
        np.testing.assert_array_equal(gt, ref[c.structure][1])
        assert spacing == pytest.approx(ref[c.structure][2])
    shutil.rmtree(root / "masks")
    sitk.WriteImage(sitk.ReadImage(str(patient / "masks" / "ball.nii.gz")), str(tmp_path / "ball.mha"))
    with zipfile.ZipFile(root / "masks.zip", "w") as zf:
        zf.write(tmp_path / "ball.mha", "masks/ball.mha")
    (case,) = datasets.find_cases(root)
    assert case.name == "slicer_pat:ball"
    np.testing.assert_array_equal(datasets.load_volume(case)[1], ref["ball"][1])


def test_structure_layout_dicom_series_and_masks_zip(tmp_path):
    """3D-IRCADb's layout: PATIENT_DICOM/ (a series) + MASKS_DICOM.zip (a series per structure, 0/255)."""
    from pydicom.uid import generate_uid

    from conftest import ct_dataset

    hu = np.full((4, 32, 32), -100.0)
    liver = np.zeros(hu.shape, bool)
    liver[1:3, 8:20, 10:24] = True
    hu[liver] = 60.0
    (tmp_path / "p1" / "PATIENT_DICOM").mkdir(parents=True)
    series = {name: (generate_uid(), generate_uid(), generate_uid()) for name in ("ct", "liver", "spleen")}
    with zipfile.ZipFile(tmp_path / "p1" / "MASKS_DICOM.zip", "w") as zf:
        for z in range(4):
            pos = (-20.0, -20.0, 5.0 * z)
            ds = ct_dataset(hu[z], pos, (1, 0, 0, 0, 1, 0), (0.7, 0.7), z + 1, series["ct"])
            ds.save_as(tmp_path / "p1" / "PATIENT_DICOM" / f"image_{z}", enforce_file_format=True)
            for name, m in (("liver", liver[z]), ("spleen", np.zeros_like(liver[z]))):
                mds = ct_dataset(np.where(m, 255.0, 0.0), pos, (1, 0, 0, 0, 1, 0), (0.7, 0.7), z + 1, series[name], intercept=0.0)
                buf = io.BytesIO()
                mds.save_as(buf, enforce_file_format=True)
                zf.writestr(f"MASKS_DICOM/{name}/image_{z}", buf.getvalue())
    cases = datasets.find_cases(tmp_path / "p1")
    assert [c.name for c in cases] == ["p1:liver", "p1:spleen"] and cases[0].member == "MASKS_DICOM/liver/"
    vhu, gt, spacing = datasets.load_volume(cases[0])
    assert gt.shape == vhu.shape == (4, 32, 32) and spacing == pytest.approx((5.0, 0.7, 0.7))
    assert gt.sum() == liver.sum() and (vhu[gt] == 60).all()  # the mask overlays the CT
    assert not datasets.load_volume(cases[1])[1].any()


def test_folder_of_neither_layout_fails_with_both_named(tmp_path):
    (tmp_path / "x.txt").write_text("no data")
    with pytest.raises(SystemExit, match="nor one patient with structure masks"):
        runner.run(runner.RunConfig(data=str(tmp_path), methods=("watershed",), max_clicks=1, out=str(tmp_path / "o")))


@pytest.mark.skipif(not (SPLEEN_SAMPLE.parent / "ircadb_patient1").is_dir(), reason="3D-IRCADb patient 1 not present")
def test_real_ircadb_patient_structures():
    cases = {c.structure: c for c in datasets.find_cases(SPLEEN_SAMPLE.parent / "ircadb_patient1")}
    assert {"liver", "spleen", "leftkidney", "rightkidney"} <= set(cases)
    hu, gt, spacing = datasets.load_volume(cases["spleen"])
    assert hu.shape == gt.shape == (129, 512, 512) and spacing[0] == pytest.approx(1.6)
    assert 10 < len(np.nonzero(gt.any((1, 2)))[0]) < 129 and float(np.median(hu[gt])) > 0  # soft tissue, not air


def test_volume_protocol_end_to_end(ckpt, patient, tmp_path, capsys):
    """--protocols volume (with ritm beside it): IU-Net through VolumeSession, the 3D random walker;
    3D rows with z-extent errors; the 3D section of summary.md; watershed left out with a note."""
    from iunet.inference import VolumeSession

    out = tmp_path / "vol"
    main(["run", "--data", str(patient), "--weights", ckpt, "--methods", "iunet-dynamic", "random-walker", "watershed",
          "--protocols", "ritm", "volume", "--max-clicks", "3", "--rw-grid-px", "48", "--rw-volume-grid-px", "32", "--out", str(out)])
    assert "no 3D form" in capsys.readouterr().out
    rows = runner.read_rows(out / "results.csv")
    vol = [r for r in rows if r["protocol"] == "volume"]
    assert {(r["case"], r["method"]) for r in vol} == {(c, m) for c in ("pat:ball", "pat:slab") for m in ("iunet-dynamic", "random-walker")}
    assert len(vol) == 2 * 2 * 3 and all(r["slice"] == "" and r["z_err_slices"] != "" for r in vol)
    assert all(r["z_err_slices"] == "" for r in rows if r["protocol"] == "ritm")
    gt_vox = {"pat:ball": None, "pat:slab": 2 * 8 * 32}
    assert all(int(r["gt_px"]) == gt_vox["pat:slab"] for r in vol if r["case"] == "pat:slab")
    summary = (out / "summary.md").read_text()
    assert "Robot `volume` (3D, per volume)" in summary and "3D Dice@10" in summary and "z-extent error" in summary
    assert "| pat:slab |" in summary and (out / "dice_vs_clicks.png").stat().st_size > 1000
    assert "| 3D random walker (32² in-plane grid), dynamic α=1/800 |" in summary
    # the IU-Net's volume state is the app's VolumeSession
    m = runner.build_methods(("iunet-dynamic",), Predictor(ckpt, device="cpu"), None, ClickSize(5.0, 1 / 800), 5.0, 64)[0]
    assert isinstance(m.start_volume(np.zeros((3, 16, 16), np.float32), (2.0, 1.0, 1.0)), VolumeSession)
    # iunet-zoomout: the same sessions with ZoomOut, on slices and volumes; not in the default set
    from iunet.inference import ZoomOut

    plain, wide = runner.build_methods(("iunet-dynamic", "iunet-zoomout"), Predictor(ckpt, device="cpu"), None, ClickSize(5.0, 1 / 800), 5.0, 64)
    assert wide.name == "iunet-zoomout" and wide.volumetric and "iunet-zoomout" not in runner.DEFAULT_METHODS
    assert isinstance(wide.start(np.zeros((16, 16), np.float32)).zoom_out, ZoomOut) and plain.start(np.zeros((16, 16), np.float32)).zoom_out is None
    assert isinstance(wide.start_volume(np.zeros((3, 16, 16), np.float32), (2.0, 1.0, 1.0)).zoom_out, ZoomOut)
    assert plain.start(np.zeros((16, 16), np.float32)).prev_mask  # shown the mask so far, unless --no-prev-mask
    assert not replace(plain, prev_mask=False).start(np.zeros((16, 16), np.float32)).prev_mask
    # with --alpha none, iunet-dynamic's clicks are fixed too: its row is not labelled as iunet-fixed's
    dyn, fix = runner.build_methods(("iunet-dynamic", "iunet-fixed"), None, None, ClickSize(5.0, None), 5.0, 64)
    assert dyn.label != fix.label and "iunet-dynamic, --alpha none" in dyn.label
    # --no-small-carry (a diagnostic): the sessions do not look for small carried masks again,
    # and the run says so; by default they do
    assert m.start_volume(np.zeros((3, 16, 16), np.float32), (2.0, 1.0, 1.0)).small_carry
    off = tmp_path / "vol_nosc"
    main(["run", "--data", str(patient), "--weights", ckpt, "--methods", "iunet-dynamic", "--protocols", "volume",
          "--max-clicks", "1", "--cases", "pat:slab", "--no-small-carry", "--out", str(off)])
    assert json.loads((off / "run.json").read_text())["config"]["small_carry"] is False
    assert "--no-small-carry" in (off / "summary.md").read_text()
    assert not replace(m, small_carry=False).start_volume(np.zeros((3, 16, 16), np.float32), (2.0, 1.0, 1.0)).small_carry
    # --carry-negative-mm (a diagnostic): how far the sessions carry background clicks; recorded and said
    from iunet.inference import CARRY_NEGATIVE_MM

    assert m.start_volume(np.zeros((3, 16, 16), np.float32), (2.0, 1.0, 1.0)).carry_negative_mm == CARRY_NEGATIVE_MM > 0
    assert replace(m, carry_negative_mm=0.0).start_volume(np.zeros((3, 16, 16), np.float32), (2.0, 1.0, 1.0)).carry_negative_mm == 0.0
    cn = tmp_path / "vol_cn0"
    main(["run", "--data", str(patient), "--weights", ckpt, "--methods", "iunet-dynamic", "--protocols", "volume",
          "--max-clicks", "1", "--cases", "pat:slab", "--carry-negative-mm", "0", "--out", str(cn)])
    assert json.loads((cn / "run.json").read_text())["config"]["carry_negative_mm"] == 0.0
    assert "carries background clicks 0 mm** (`--carry-negative-mm`" in (cn / "summary.md").read_text()
    # --regrow-limit / --shrink-limit (diagnostics): the sessions' limits on a re-propagation's
    # growth into other tissue and on a foreground click's run cutting masks down; 0 = off, recorded and said
    from iunet.inference import REGROW_LIMIT, SHRINK_LIMIT

    for flag, key, default, said in (("--regrow-limit", "regrow_limit", REGROW_LIMIT, "may grow a slice's mask into any tissue**"),
                                     ("--shrink-limit", "shrink_limit", SHRINK_LIMIT, "may cut a slice's mask to any size**")):
        assert getattr(m.start_volume(np.zeros((3, 16, 16), np.float32), (2.0, 1.0, 1.0)), key) == default > 0
        off = tmp_path / f"vol_{key}0"
        main(["run", "--data", str(patient), "--weights", ckpt, "--methods", "iunet-dynamic", "--protocols", "volume",
              "--max-clicks", "1", "--cases", "pat:slab", flag, "0", "--out", str(off)])
        assert json.loads((off / "run.json").read_text())["config"][key] == 0.0
        assert f"{said} (`{flag}`" in (off / "summary.md").read_text()
        assert key not in json.loads((cn / "run.json").read_text())["config"]  # the default is not recorded
    with pytest.raises(SystemExit, match="--shrink-limit must be a fraction"):
        main(["run", "--data", str(patient), "--methods", "iunet-dynamic", "--protocols", "volume", "--shrink-limit", "1.5",
              "--out", str(tmp_path / "vol_bad")])
    # --no-zoom-in (a diagnostic): iunet-zoomout's ZoomOut never zooms in; recorded and said
    assert wide.zoom_out.zoom_in_fraction > 0
    nz = tmp_path / "no_zoom_in"
    main(["run", "--data", str(patient), "--weights", ckpt, "--methods", "iunet-zoomout", "--protocols", "ritm",
          "--max-clicks", "1", "--cases", "pat:slab", "--no-zoom-in", "--out", str(nz)])
    assert json.loads((nz / "run.json").read_text())["config"]["zoom_in"] is False
    # --no-focus (a diagnostic): no focus view for later clicks; recorded and said
    assert wide.zoom_out.focus_growth > 0
    nf = tmp_path / "no_focus"
    main(["run", "--data", str(patient), "--weights", ckpt, "--methods", "iunet-zoomout", "--protocols", "ritm",
          "--max-clicks", "2", "--cases", "pat:slab", "--no-focus", "--out", str(nf)])
    assert json.loads((nf / "run.json").read_text())["config"]["focus"] is False
    assert "--no-focus" in (nf / "summary.md").read_text()
    assert "--no-zoom-in" in (nz / "summary.md").read_text()
    # --no-centre-zoom (a diagnostic: a large first mask is always zoomed out) and --no-zoom-refine
    # (a diagnostic: first masks not refined at the full view): set on the run's ZoomOut,
    # recorded and said; the defaults are not recorded
    assert wide.zoom_out.centre_radius_px > 0 and wide.zoom_out.refine
    zo = runner.zoom_out_options([plain, wide], runner.RunConfig(centre_zoom=False, zoom_refine=False, focus=False))
    assert zo[0] is plain and zo[1].zoom_out == replace(wide.zoom_out, centre_radius_px=0.0, refine=False, focus_growth=0.0)
    assert runner.zoom_out_options([wide], runner.RunConfig())[0] is wide
    for flag, key, value in (("--no-centre-zoom", "centre_zoom", False), ("--no-zoom-refine", "zoom_refine", False), ("--no-prev-mask", "prev_mask", False)):
        o = tmp_path / key
        main(["run", "--data", str(patient), "--weights", ckpt, "--methods", "iunet-zoomout", "--protocols", "ritm",
              "--max-clicks", "1", "--cases", "pat:slab", flag, "--out", str(o)])
        assert json.loads((o / "run.json").read_text())["config"][key] is value
        assert flag in (o / "summary.md").read_text()
        assert key not in json.loads((nf / "run.json").read_text())["config"]


def test_volume_protocol_without_a_3d_method_is_refused(ckpt, patient, tmp_path):
    """--protocols volume with only methods that have no 3D form: a clear error before any
    output is written, not an empty run that exits 0."""
    out = tmp_path / "none"
    with pytest.raises(SystemExit, match="needs a method with a 3D form"):
        main(["run", "--data", str(patient), "--weights", ckpt, "--methods", "watershed",
              "--protocols", "volume", "--max-clicks", "1", "--out", str(out)])
    assert not out.exists()


def test_volume_only_summary_counts_volumes_not_slices(ckpt, patient, tmp_path):
    out = tmp_path / "vol_only"
    main(["run", "--data", str(patient), "--weights", ckpt, "--methods", "iunet-dynamic", "--protocols", "volume",
          "--max-clicks", "2", "--cases", "pat:slab", "--out", str(out)])
    data_line = next(line for line in (out / "summary.md").read_text().splitlines() if line.startswith("- Data:"))
    assert "whole volumes" in data_line and "0 slices" not in data_line
    text = (out / "summary.md").read_text()
    assert "mean over slices" not in text and "- 3D Dice in %, per volume" in text  # no per-slice legend


def test_thick_slices_average_slabs():
    hu = np.arange(7, dtype=np.float32)[:, None, None] * np.ones((7, 2, 3), np.float32)
    gt = np.zeros((7, 2, 3), bool)
    gt[1, 0, 0] = gt[2, 0, 0] = gt[3, 0, 0] = True  # slab 0 (z 0-1): half; slab 1 (z 2-3): whole
    gt[4, 1, 1] = True  # slab 2 (z 4-5): half; z 6 fills no slab and is dropped
    t_hu, t_gt, spacing = datasets.thicken(hu, gt, (1.6, 0.5, 0.5), 2)
    assert t_hu.shape == t_gt.shape == (3, 2, 3) and t_hu.dtype == np.float32
    np.testing.assert_allclose(t_hu[:, 0, 0], [0.5, 2.5, 4.5])
    assert t_gt[:, 0, 0].tolist() == [True, True, False] and t_gt[:, 1, 1].tolist() == [False, False, True]
    assert t_gt.sum() == 3 and spacing == pytest.approx((3.2, 0.5, 0.5))
    same = datasets.thicken(hu, gt, (1.6, 0.5, 0.5), 1)
    assert same[0] is hu and same[1] is gt
    with pytest.raises(ValueError, match="only 7 slices"):
        datasets.thicken(hu, gt, (1.6, 0.5, 0.5), 8)
    # A volume of slices repeated 4 times comes back as its distinct slices.
    rep = np.repeat(np.arange(3, dtype=np.float32)[:, None, None] * np.ones((1, 2, 2), np.float32), 4, axis=0)
    np.testing.assert_array_equal(datasets.thicken(rep, rep > 0, (7.5, 1, 1), 4)[0], rep[::4])


def test_thick_slices_run_scores_the_thicker_scan(ckpt, patient, tmp_path, capsys):
    out = tmp_path / "thick"
    main(["run", "--data", str(patient), "--weights", ckpt, "--methods", "iunet-dynamic", "--protocols", "ritm", "volume",
          "--max-clicks", "1", "--cases", "pat:ball", "--thick-slices", "2", "--out", str(out)])
    rows = runner.read_rows(out / "results.csv")
    # the ball spans z 3-9 of 12 slices at 2.5 mm; averaged in pairs, slabs 1-4 of 6 at 5 mm
    assert sorted({int(r["slice"]) for r in rows if r["protocol"] == "ritm"}) == [1, 2, 3, 4]
    assert json.loads((out / "run.json").read_text())["config"]["thick_slices"] == 2
    assert "every 2 axial slices averaged into one" in (out / "summary.md").read_text()
    with pytest.raises(SystemExit):
        main(["run", "--data", str(patient), "--weights", ckpt, "--thick-slices", "0", "--out", str(tmp_path / "x")])


def test_thin_slices_interpolate_images_and_shapes():
    hu = np.array([0.0, 30.0, 60.0], np.float32)[:, None, None] * np.ones((3, 21, 21), np.float32)
    yy, xx = np.mgrid[:21, :21]
    r = np.hypot(yy - 10, xx - 10)
    gt = np.stack([r <= 8, r <= 4, np.zeros((21, 21), bool)])  # a disk that shrinks, then ends
    t_hu, t_gt, spacing = datasets.thin(hu, gt, (1.6, 0.5, 0.5), 2)
    assert t_hu.shape == t_gt.shape == (5, 21, 21) and t_hu.dtype == np.float32 and t_gt.dtype == bool
    np.testing.assert_allclose(t_hu[:, 0, 0], [0, 15, 30, 45, 60])  # stored slices kept, midway ones the mean
    assert spacing == pytest.approx((0.8, 0.5, 0.5))
    np.testing.assert_array_equal(t_gt[::2], gt)
    # by shape, not by overlap: the midway disk has the mean radius (6 px), not the union (8) or intersection (4)
    assert ((r < 5.5) <= t_gt[1]).all() and (t_gt[1] <= (r < 6.5)).all()
    assert not t_gt[3].any()  # halfway to where it has ended: gone
    t3 = datasets.thin(hu, gt, (1.6, 0.5, 0.5), 3)[1]
    assert t3.shape[0] == 7 and (t3[4] == gt[1]).all() and not t3[5].any()  # the nearer slice's mask at the end
    assert t3[1].sum() > t3[2].sum()  # shrinking gradually
    same = datasets.thin(hu, gt, (1.6, 0.5, 0.5), 1)
    assert same[0] is hu and same[1] is gt
    with pytest.raises(ValueError, match="only 1 slice"):
        datasets.thin(hu[:1], gt[:1], (1.6, 0.5, 0.5), 2)


def test_thin_slices_run_scores_the_thinner_scan(ckpt, patient, tmp_path):
    out = tmp_path / "thin"
    main(["run", "--data", str(patient), "--weights", ckpt, "--methods", "iunet-dynamic", "--protocols", "ritm",
          "--max-clicks", "1", "--cases", "pat:ball", "--thin-slices", "2", "--out", str(out)])
    rows = runner.read_rows(out / "results.csv")
    # the ball spans z 3-9 of 12 slices at 2.5 mm; with a slice between each pair, about z 6-18 of 23 at 1.25 mm
    zs = sorted({int(r["slice"]) for r in rows})
    assert zs[0] in (5, 6) and zs[-1] in (18, 19) and zs == list(range(zs[0], zs[-1] + 1))
    assert json.loads((out / "run.json").read_text())["config"]["thin_slices"] == 2
    assert "1 interpolated slice between neighbours" in (out / "summary.md").read_text()
    for bad in (["--thin-slices", "0"], ["--thin-slices", "2", "--thick-slices", "2"]):
        with pytest.raises(SystemExit):
            main(["run", "--data", str(patient), "--weights", ckpt, *bad, "--out", str(tmp_path / "x")])
    with pytest.raises(SystemExit, match="not both"):
        runner.run(runner.RunConfig(data=str(patient), weights=ckpt, thick_slices=2, thin_slices=2, out=str(tmp_path / "y")))


def test_added_noise_is_seeded_correlated_and_of_the_asked_size():
    hu = np.zeros((3, 96, 80), np.float32)
    noisy = datasets.add_noise(hu, 25.0, 0, "pat:ball")
    assert noisy.dtype == np.float32 and noisy.shape == hu.shape and not hu.any()  # the input is left alone
    assert [float(np.std(noisy[z])) for z in range(3)] == pytest.approx([25.0] * 3, rel=1e-3)
    assert abs(float(noisy.mean())) < 1.0
    np.testing.assert_array_equal(noisy, datasets.add_noise(hu, 25.0, 0, "pat:ball"))  # every method sees the same scan
    assert not np.array_equal(noisy, datasets.add_noise(hu, 25.0, 1, "pat:ball"))
    assert not np.array_equal(noisy, datasets.add_noise(hu, 25.0, 0, "pat:slab"))
    # correlated like CT noise: neighbouring pixels agree (white noise would give about 0)
    r = np.corrcoef(noisy[:, :, 1:].ravel(), noisy[:, :, :-1].ravel())[0, 1]
    assert 0.4 < r < 0.9
    assert datasets.add_noise(hu, 0.0, 0, "x") is hu
    with pytest.raises(ValueError, match=">= 0"):
        datasets.add_noise(hu, -1.0, 0, "x")


def test_wider_field_of_view_pads_with_air():
    hu = np.full((2, 40, 30), 50.0, np.float32)
    gt = np.zeros(hu.shape, bool)
    gt[:, 10:20, 5:15] = True
    # 40 px × 0.5 mm = 20 mm on the longer side; 30 mm needs 20 more pixels, 10 on each side
    w_hu, w_gt = datasets.widen_fov(hu, gt, (2.0, 0.5, 0.5), 30.0)
    assert w_hu.shape == w_gt.shape == (2, 60, 50) and w_hu.dtype == np.float32 and w_gt.dtype == bool
    assert (w_hu[:, 10:50, 10:40] == 50).all() and (w_hu == 50).sum() == hu.size and (w_hu[w_hu != 50] == -1000).all()
    assert w_gt.sum() == gt.sum() and w_gt[:, 20:30, 15:25].all()
    same = datasets.widen_fov(hu, gt, (2.0, 0.5, 0.5), 0.0)
    assert same[0] is hu and same[1] is gt
    assert datasets.widen_fov(hu, gt, (2.0, 0.5, 0.5), 20.0)[0].shape == hu.shape  # its own field of view
    with pytest.raises(ValueError, match="smaller than the scan's own"):
        datasets.widen_fov(hu, gt, (2.0, 0.5, 0.5), 15.0)


def test_noise_and_field_of_view_runs_record_and_score_the_changed_scan(ckpt, patient, tmp_path):
    out = tmp_path / "degraded"
    main(["run", "--data", str(patient), "--weights", ckpt, "--methods", "iunet-dynamic", "--protocols", "ritm",
          "--max-clicks", "1", "--cases", "pat:ball", "--noise-hu", "30", "--fov-mm", "60", "--out", str(out)])
    cfg = json.loads((out / "run.json").read_text())["config"]
    assert cfg["noise_hu"] == 30 and cfg["fov_mm"] == 60
    summary = (out / "summary.md").read_text()
    assert "Gaussian noise of 30 HU added" in summary and "60 mm field of view" in summary
    # the ball's slices are scored, on the padded grid (48 px × 0.8 mm = 38.4 mm → 60 mm: 27 more pixels)
    c = datasets.select_cases(datasets.find_cases(patient), ["pat:ball"])[0]
    hu, gt, spacing, note = runner.load_scored_volume(c, runner.RunConfig(data=str(patient), noise_hu=30, fov_mm=60))
    assert hu.shape == gt.shape == (12, 75, 75) and gt.sum() == datasets.load_volume(c)[1].sum()
    assert 20 < float(np.std(hu[0][hu[0] > -500] + 80)) < 40  # the ball-free slice: body at -80 HU plus 30 HU noise
    rows = runner.read_rows(out / "results.csv")
    assert {int(r["gt_px"]) for r in rows} == {int(gt[z].sum()) for z in range(12) if gt[z].any()}
    # the run without them is another run (not resumed into this folder)
    plain = runner._identity(runner.RunConfig(data=str(patient)), ["pat:ball"])
    assert "noise_hu" not in plain and "fov_mm" not in plain
    for flag in ("--noise-hu", "--fov-mm"):
        with pytest.raises(SystemExit):
            main(["run", "--data", str(patient), "--weights", ckpt, flag, "-1", "--out", str(tmp_path / "x")])
    with pytest.raises(SystemExit, match="smaller than the scan's own"):
        main(["run", "--data", str(patient), "--weights", ckpt, "--methods", "iunet-dynamic", "--protocols", "ritm",
              "--cases", "pat:ball", "--fov-mm", "20", "--out", str(tmp_path / "y")])


def test_volume_rows_with_a_stand_in_session(ckpt, patient, monkeypatch):
    """The volume protocol's plumbing with a stand-in volume session (a perfect painter): 3D Dice
    reaches 1 and the robot stops clicking (Dice carried over, no time)."""

    class Oracle:
        def __init__(self, predictor, volume_hu, click_size=None, threshold=0.5, spacing_mm=None, zoom_out=None):
            self.mask = np.zeros(volume_hu.shape, bool)

        def add_click(self, z, y, x, positive=True):
            from scipy import ndimage

            err = ndimage.label(self.gt ^ self.mask)[0]
            self.mask[err == err[z, y, x]] = positive
            return self.mask

    import iunet.inference

    monkeypatch.setattr(iunet.inference, "VolumeSession", Oracle, raising=False)
    case = datasets.find_cases(patient)[1]
    hu, gt, spacing = datasets.load_volume(case)
    Oracle.gt = gt
    m = runner.build_methods(("iunet-dynamic",), Predictor(ckpt, device="cpu"), None, ClickSize(5.0, 1 / 800), 5.0, 64)
    rows = runner.evaluate_volume(case.name, hu, gt, spacing, m, 3, 0)
    assert [float(r["dice"]) for r in rows] == [1.0, 1.0, 1.0] and [r["ms"] == "" for r in rows] == [False, True, True]
    assert [r["n_clicks"] for r in rows] == [1, 1, 1] and [r["z_err_slices"] for r in rows] == [0, 0, 0]


# ---------------------------------------------------------------------------------------
# click size: the checkpoint's by default, one α parser


def test_click_size_defaults_to_the_checkpoints(colon, tmp_path):
    torch.manual_seed(0)
    mc = ModelConfig(base_channels=4, depth=2)
    path = save_checkpoint(Checkpoint(UNet(mc), mc, InputConfig(grid_px=64, default_radius_px=3.0, alpha=1 / 500)), tmp_path / "a500.safetensors")
    common = ["run", "--data", str(colon), "--weights", str(path), "--methods", "iunet-dynamic", "iunet-fixed", "--protocols", "ritm",
              "--max-clicks", "1", "--cases", "colon_001"]
    main(common + ["--out", str(tmp_path / "a")])
    meta = json.loads((tmp_path / "a" / "run.json").read_text())
    assert meta["config"]["alpha"] == pytest.approx(1 / 500) and meta["config"]["radius_px"] == 3.0
    assert meta["methods"]["iunet-dynamic"] == "IU-Net, dynamic α=1/500" and meta["methods"]["iunet-fixed"] == "IU-Net, fixed 3 px"
    main(common + ["--alpha", "1/800", "--radius-px", "5", "--out", str(tmp_path / "b")])  # asked for: as asked
    meta = json.loads((tmp_path / "b" / "run.json").read_text())
    assert meta["config"]["alpha"] == pytest.approx(1 / 800) and meta["config"]["radius_px"] == 5.0
    main(common + ["--alpha", "none", "--out", str(tmp_path / "c")])  # fixed clicks for every method
    meta = json.loads((tmp_path / "c" / "run.json").read_text())
    assert meta["config"]["alpha"] is None and "fixed 3 px" in (tmp_path / "c" / "summary.md").read_text()


def test_one_alpha_parser_for_both_command_lines(capsys):
    from iunet.clicks import parse_alpha
    from iunet.train import parse_args

    assert parse_alpha("1/800") == pytest.approx(1 / 800) and parse_alpha("0.002") == 0.002 and parse_alpha("none") is None
    for bad in ("abc", "0", "-1/5", "1/0"):
        with pytest.raises(ValueError, match="α"):
            parse_alpha(bad)
    assert parse_args(["--alpha", "none"]).inputs.alpha is None and main is not None
    for argv, run in ((["--alpha", "abc"], parse_args), (["run", "--alpha", "abc"], main)):
        with pytest.raises(SystemExit):
            run(argv)
        err = capsys.readouterr().err
        assert "give a number such as 1/800 or 0.00125, or 'none'" in err and "Traceback" not in err


# ---------------------------------------------------------------------------------------
# download: failures a retry cannot fix


def test_download_unknown_host_fails_at_once_and_leaves_no_folder(tmp_path, capsys):
    dest = tmp_path / "new" / "data"
    t0 = time.time()
    with pytest.raises(download.DownloadError, match="could not be resolved"):
        download.fetch_task(dest, url="http://no-such-host.invalid/Task09_Spleen.tar", retries=3)
    assert time.time() - t0 < 20 and "try 2" not in capsys.readouterr().err  # no retries, no backoff
    assert not (tmp_path / "new").exists()


def test_download_refused_connection_fails_at_once_and_leaves_no_folder(tmp_path, capsys):
    from conftest import free_port

    dest = tmp_path / "d"
    with pytest.raises(SystemExit, match="refused the connection"):
        main(["download", "--url", f"http://127.0.0.1:{free_port()}/Task99_Tiny.tar", "--dest", str(dest)])
    assert "try 2" not in capsys.readouterr().err and not dest.exists()


def test_download_into_a_new_folder_from_a_local_server(server, tmp_path):
    dest = tmp_path / "fresh" / "data"
    made = download.fetch_task(dest, url=server["url"], md5=server["md5"])
    assert made == [dest / "Task99_Tiny"] and (dest / "Task99_Tiny" / "dataset.json").exists()


def test_onnx_runtime_run_gives_the_torch_rows(ckpt, colon, tmp_path, monkeypatch):
    """``--runtime onnx`` runs the same clicks to the same Dice (to float rounding) as torch and
    says so in run.json; a runtime that cannot run here is refused with its reason."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    want = runner.read_rows(runner.run(_cfg(ckpt, colon, tmp_path / "torch", methods=("iunet-dynamic",))) / "results.csv")
    got = runner.read_rows(runner.run(_cfg(ckpt, colon, tmp_path / "onnx", methods=("iunet-dynamic",), runtime="onnx")) / "results.csv")
    assert len(got) == len(want) > 0
    for w, g in zip(want, got):
        assert (g["case"], g["slice"], g["protocol"], g["click"]) == (w["case"], w["slice"], w["protocol"], w["click"])
        assert abs(float(g["dice"]) - float(w["dice"])) < 1e-3
    meta = json.loads((tmp_path / "onnx" / "run.json").read_text())
    assert meta["options"]["runtime"] == "onnx" and "ONNX Runtime" in meta["options"]["device"]
    import iunet.inference as inference

    def missing(*_a, **_k):
        raise ImportError("runtime='onnx' needs onnxruntime and onnx: pip install onnxruntime onnx")

    monkeypatch.setattr(inference, "onnx_session", missing)
    with pytest.raises(SystemExit, match="pip install onnxruntime"):
        runner.run(_cfg(ckpt, colon, tmp_path / "missing", methods=("iunet-dynamic",), runtime="onnx"))


def test_upsampling_note_finds_volumes_enlarged_by_repeating_voxels(tmp_path):
    """A volume upsampled by repeating voxels (as the spleen_8 sample: 8 slices of 128² shown as
    32 of 512²) is named in run.json and summary.md; a natural one is not."""
    rng = np.random.default_rng(0)
    hu = rng.normal(40.0, 20.0, (6, 24, 24)).astype(np.float32)
    assert datasets.upsampling_note(hu, (2.0, 1.0, 1.0)) is None
    assert datasets.upsampling_note(np.concatenate([np.full((2, 24, 24), -1000.0, np.float32), hu])) is None  # air padding
    big = np.repeat(np.repeat(np.repeat(hu, 4, 0), 2, 1), 2, 2)  # 24 slices of 48², from 6 of 24²
    note = datasets.upsampling_note(big, (2.5, 0.5, 0.5))
    assert note.startswith("6 distinct slices among 24") and "2 × 2 identical pixels" in note
    assert "about 1 × 1 × 10 mm" in note
    assert datasets.upsampling_note(np.repeat(hu, 3, 0)).startswith("6 distinct slices among 18")
    root = tmp_path / "Task09_Spleen"
    for sub in ("imagesTr", "labelsTr"):
        (root / sub).mkdir(parents=True)
    gt = np.zeros(big.shape, np.uint8)
    gt[8:16, 16:32, 16:32] = 1
    big[gt > 0] += 100.0
    _write_nifti(root / "imagesTr" / "spleen_1.nii.gz", big)
    _write_nifti(root / "labelsTr" / "spleen_1.nii.gz", gt, dtype=np.uint8)
    out = tmp_path / "out"
    cfg = runner.RunConfig(data=str(root), methods=("random-walker",), protocols=("ritm",), max_clicks=1, slices="largest", out=str(out), rw_grid_px=32)
    runner.run(cfg)
    assert "6 distinct slices among 24" in json.loads((out / "run.json").read_text())["data_notes"]["spleen_1"]
    assert "**Data check**: `spleen_1`: 6 distinct slices among 24" in (out / "summary.md").read_text()
    # this volume has no air or fat either: the values check says so, even with --fov-mm's air around it
    assert "no value below -200" in json.loads((out / "run.json").read_text())["data_notes"]["spleen_1"]
    case = datasets.find_cases(root)[0]
    assert "no value below -200" in runner.load_scored_volume(case, replace(cfg, fov_mm=200.0))[3]
    synthetic = datasets.find_cases(datasets.make_synthetic_msd(tmp_path / "syn", n_cases=1))[0]
    assert runner.load_scored_volume(synthetic, cfg)[3] is None  # CT in HU (air around the body): no note
    runner.run(replace(cfg, resume=True))  # nothing left to run: the note of the case done is kept
    assert "**Data check**: `spleen_1`: 6 distinct slices among 24" in (out / "summary.md").read_text()
