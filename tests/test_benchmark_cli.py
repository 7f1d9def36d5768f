"""The benchmark's command line refuses bad input in one line, never with a traceback.

``python -m benchmark run|report|speed|download`` flags checked at parse time, a report of a
folder that is no run folder, damaged and truncated downloads, and sessions refused for an
automatic (click-free) U-Net. Fast, CPU, tiny random-weight models.
"""
from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark import datasets, download, runner, speed
from benchmark.__main__ import main
from iunet.inference import Predictor, Session, VolumeSession
from test_benchmark import ckpt, one_thread, unet_ckpt  # noqa: F401 (the run tests' fixtures: tiny models, one thread)


def _refused(argv: list[str], capsys, *needles: str) -> str:
    """``main(argv)`` exits with argparse's usage error (2) whose last line names ``needles``."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    for n in needles:
        assert n in last, last
    return last


# ---------------------------------------------------------------------------------------
# run: flags checked before anything runs


@pytest.fixture()
def no_run(monkeypatch, tmp_path):
    """``runner.run`` replaced: records the config it gets instead of running."""
    got = []

    def fake(cfg):
        got.append(cfg)
        (tmp_path / "summary.md").write_text("# stub\n")
        return tmp_path

    monkeypatch.setattr(runner, "run", fake)
    return got


@pytest.mark.parametrize("flag,value,needle", [
    ("--threads", "-1", "must be >= 1"),
    ("--threads", "0", "must be >= 1"),
    ("--threads", "two", "is not a whole number"),
    ("--seed", "-1", "must be >= 0"),
    ("--rw-grid-px", "0", "must be >= 8"),
    ("--rw-grid-px", "-5", "must be >= 8"),
    ("--rw-volume-grid-px", "0", "must be >= 8"),
    ("--rw-volume-grid-px", "-5", "must be >= 8"),
    ("--device", "foo", "give auto, cpu, cuda or cuda:N"),
    ("--device", "cuda:x", "give auto, cpu, cuda or cuda:N"),
])
def test_run_refuses_bad_flags_at_parse_time(flag, value, needle, no_run, capsys):
    _refused(["run", flag, value], capsys, f"argument {flag}", needle)
    assert not no_run


def test_run_accepts_the_smallest_good_values(no_run, tmp_path, capsys):
    main(["run", "--threads", "1", "--seed", "0", "--rw-grid-px", "8", "--rw-volume-grid-px", "8", "--device", "CPU", "--out", str(tmp_path)])
    cfg = no_run[0]
    assert (cfg.threads, cfg.seed, cfg.rw_grid_px, cfg.rw_volume_grid_px, cfg.device) == (1, 0, 8, 8, "cpu")
    main(["run", "--out", str(tmp_path)])
    assert no_run[1].threads is None and no_run[1].device == "auto"  # the defaults stand


def test_device_argument_takes_what_resolve_device_takes():
    assert [speed.device_argument(d) for d in ("auto", "cpu", "cuda", " Cuda ")] == ["auto", "cpu", "cuda", "cuda"]
    if not torch.cuda.is_available() or torch.cuda.device_count() > 1:
        assert speed.device_argument("cuda:1") == "cuda:1"  # availability is checked where the device is used
    for bad in ("foo", "gpu", "cuda:x", "", "mps"):
        with pytest.raises(Exception, match="give auto, cpu, cuda or cuda:N"):
            speed.device_argument(bad)


# ---------------------------------------------------------------------------------------
# report


def test_report_of_a_folder_without_run_files_says_what_is_missing(tmp_path):
    with pytest.raises(SystemExit, match=r"not a benchmark run folder: no run\.json and no results\.csv \("):
        main(["report", str(tmp_path)])
    (tmp_path / "run.json").write_text("{}")
    with pytest.raises(SystemExit, match=r"no results\.csv \("):
        main(["report", str(tmp_path)])
    with pytest.raises(SystemExit, match="is not a folder"):
        main(["report", str(tmp_path / "nope")])


# ---------------------------------------------------------------------------------------
# speed


@pytest.fixture()
def no_measure(monkeypatch):
    def fake(*a, **kw):
        raise AssertionError("measure() should not be reached")

    monkeypatch.setattr(speed, "measure", fake)


@pytest.mark.parametrize("argv,needle", [
    (["--clicks", "0"], "argument --clicks: '0' must be >= 1"),
    (["--batch-sizes", "0"], "argument --batch-sizes: '0' must be >= 1"),
    (["--batch-sizes", "1", "-2"], "argument --batch-sizes: '-2' must be >= 1"),
    (["--repeats", "0"], "argument --repeats: '0' must be >= 1"),
    (["--threads", "-1"], "argument --threads: '-1' must be >= 1"),
    (["--devices", "cpu", "foo"], "argument --devices: 'foo' is not a device"),
])
def test_speed_refuses_bad_flags_at_parse_time(argv, needle, ckpt, no_measure, capsys):
    _refused(["speed", "--weights", ckpt, *argv], capsys, needle)


def test_speed_on_cuda_without_a_gpu_names_the_devices_flag(ckpt, monkeypatch, no_measure):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match=r"no CUDA GPU is available here; use --devices cpu$"):
        main(["speed", "--weights", ckpt, "--devices", "cuda"])
    with pytest.raises(SystemExit, match="use --devices cpu"):
        main(["speed", "--weights", ckpt, "--devices", "cpu", "cuda:0"])


def test_speed_times_an_automatic_unet_without_a_session(unet_ckpt, tmp_path):
    main(["speed", "--weights", unet_ckpt, "--devices", "cpu", "--clicks", "3", "--batch-sizes", "2", "--repeats", "1", "--out", str(tmp_path)])
    rec = json.loads((tmp_path / "speed.json").read_text())["records"][0]
    assert rec["latency_p95_ms"] >= rec["latency_p50_ms"] > 0 and rec["benchmark_ms_per_click"] > 0
    assert "zoomed_first_p50_ms" not in rec and "first_p50_ms" not in rec  # no clicks, no first click


# ---------------------------------------------------------------------------------------
# download


@pytest.fixture(scope="module")
def task_tar(tmp_path_factory) -> Path:
    """A small, complete Task09_Spleen.tar (MSD layout, directory entries as `tar cf` writes them)."""
    tmp = tmp_path_factory.mktemp("tar")
    root = datasets.make_synthetic_msd(tmp, "spleen", n_cases=2, n_slices=1, size_px=16)
    archive = tmp / "Task09_Spleen.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(root, arcname="Task09_Spleen")
    return archive


def _content_end(archive: Path) -> int:
    """Bytes of ``archive`` up to the end of its last member's data (the zero blocks after it excluded)."""
    with tarfile.open(archive) as tar:
        last = tar.getmembers()[-1]
    return last.offset_data + -(-last.size // 512) * 512


def test_download_refuses_negative_retries(capsys):
    _refused(["download", "--retries", "-1"], capsys, "argument --retries: '-1' must be >= 0")
    with pytest.raises(download.DownloadError, match="retries must be >= 0"):
        download.fetch_task(Path("unused"), url="file:///nowhere/x.tar", retries=-1)


def test_download_into_a_file_says_dest_must_be_a_folder(task_tar, tmp_path):
    dest = tmp_path / "data"
    dest.write_text("a file")
    with pytest.raises(SystemExit, match=r"is a file, not a folder: give --dest a folder"):
        main(["download", "--url", task_tar.as_uri(), "--dest", str(dest)])
    with pytest.raises(SystemExit, match=r"data is a file, not a folder"):
        main(["download", "--url", task_tar.as_uri(), "--dest", str(dest / "below")])
    assert dest.read_text() == "a file"


def test_download_of_a_truncated_archive_fails_and_extracts_nothing(task_tar, tmp_path, capsys):
    """Cut at every 512-byte block: tarfile reads a cut at a member boundary to a clean end, so
    the task folder's check is what tells a partial folder; nothing is left in --dest."""
    data = task_tar.read_bytes()
    end = _content_end(task_tar)
    cut = tmp_path / "src" / "Task09_Spleen.tar"
    cut.parent.mkdir()
    for n in range(512, end, 512):
        cut.write_bytes(data[:n])
        dest = tmp_path / f"d{n}"
        with pytest.raises(SystemExit) as e:
            main(["download", "--url", cut.as_uri(), "--dest", str(dest)])
        msg = str(e.value.code)
        assert "\n" not in msg and "truncated" in msg and "nothing was extracted" in msg, (n, msg)
        assert not dest.exists(), n  # neither a partial task nor the damaged archive
    capsys.readouterr()
    cut.write_bytes(data[:2048])  # as `head -c 2048 good.tar`
    with pytest.raises(SystemExit, match="truncated"):
        main(["download", "--url", cut.as_uri(), "--dest", str(tmp_path / "head")])
    cut.write_bytes(data[:end])  # everything but tar's end-of-archive blocks: still whole
    main(["download", "--url", cut.as_uri(), "--dest", str(tmp_path / "whole")])
    assert len(datasets.msd_cases(tmp_path / "whole" / "Task09_Spleen")) == 2
    assert "extracted:" in capsys.readouterr().out


def test_download_names_what_an_incomplete_task_lacks(tmp_path):
    root = datasets.make_synthetic_msd(tmp_path / "src", "spleen", n_cases=2, n_slices=1, size_px=16)
    archive = tmp_path / "Task09_Spleen.tar"
    with tarfile.open(archive, "w") as tar:  # labelsTr/ left out, though dataset.json lists its files
        for p in [root / "dataset.json", *sorted((root / "imagesTr").iterdir())]:
            tar.add(p, arcname=f"Task09_Spleen/{p.relative_to(root)}")
    with pytest.raises(download.DownloadError, match=r"Task09_Spleen/: 2 of the 4 files dataset\.json lists are missing \(e\.g\. \./labelsTr/"):
        download.fetch_task(tmp_path / "dest", url=archive.as_uri())
    assert not (tmp_path / "dest").exists()


def test_download_of_a_corrupt_archive_says_it_is_damaged_and_deletes_it(tmp_path, capsys):
    src = tmp_path / "corrupt.tar"
    src.write_bytes(np.random.default_rng(0).bytes(5000))
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(SystemExit) as e:
        main(["download", "--url", src.as_uri(), "--dest", str(dest)])
    msg = str(e.value.code)
    assert "\n" not in msg and "the archive is damaged or truncated (not a readable tar archive)" in msg
    assert f"the downloaded archive {dest / 'corrupt.tar'} was deleted" in msg
    assert list(dest.iterdir()) == [] and src.exists()  # the source itself is not touched


def test_task_folder_left_incomplete_is_fetched_again(task_tar, tmp_path, monkeypatch):
    monkeypatch.setitem(download.TASKS, "spleen", ("Task09_Spleen", task_tar.as_uri(), hashlib.md5(task_tar.read_bytes()).hexdigest()))
    partial = tmp_path / "Task09_Spleen"
    (partial / "imagesTr").mkdir(parents=True)
    (partial / "dataset.json").write_text(json.dumps({"name": "half"}))  # left by a cut download
    made = download.fetch_task(tmp_path, task="spleen")
    assert made == [partial] and not download.msd_problems(partial)
    assert download.fetch_task(tmp_path, task="spleen") == [partial]  # complete now: nothing to do


def test_msd_problems_on_folders(tmp_path):
    t = tmp_path / "Task99_Tiny"
    (t / "imagesTr").mkdir(parents=True)
    assert download.msd_problems(t) == ["no dataset.json"]
    (t / "dataset.json").write_text('{"name": "Ti')
    assert download.msd_problems(t) == ["dataset.json is cut short or unreadable"]
    (t / "dataset.json").write_text('{"name": "Tiny"}')
    assert download.msd_problems(t) == ["imagesTr/ is empty"]
    (t / "imagesTr" / "tiny_1.nii.gz").write_bytes(b"x")
    assert download.msd_problems(t) == []  # no training list, no labelsTr/: as the tests' tiny archive
    (t / "labelsTr").mkdir()
    assert download.msd_problems(t) == ["labelsTr/ is empty"]


# ---------------------------------------------------------------------------------------
# sessions need an interactive model


def test_sessions_refuse_an_automatic_unet(unet_ckpt, ckpt):
    unet = Predictor(unet_ckpt, device="cpu")
    assert not unet.interactive
    hu = np.zeros((32, 32), np.float32)
    with pytest.raises(ValueError, match="Session needs an interactive model .* automatic U-Net that ignores clicks"):
        Session(unet, hu)
    with pytest.raises(ValueError, match="VolumeSession needs an interactive model"):
        VolumeSession(unet, np.zeros((3, 32, 32), np.float32))
    Session(Predictor(ckpt, device="cpu"), hu).add_click(16, 16, True)  # an IU-Net is fine


def test_benchmark_automatic_unet_does_not_go_through_a_session(unet_ckpt):
    """The run's ``unet-auto`` predicts each slice once (runner.auto_tracks), never in a Session."""
    from benchmark.methods import Method

    rng = np.random.default_rng(0)
    gt = np.zeros((32, 32), bool)
    gt[8:20, 10:24] = True
    hu = rng.normal(0.0, 20.0, gt.shape).astype(np.float32) + 80.0 * gt
    rows = runner.evaluate_cases({"case": {0: (hu, gt)}}, [Method("unet-auto", "", Predictor(unet_ckpt, device="cpu"))], ["ritm"], 2, 0, 4)
    assert len(rows) == 2
