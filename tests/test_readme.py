"""The README's ``python -c`` examples run as written, and its set-up/test commands match CI."""
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
EXAMPLES = re.findall(r"^python -c .+$", README, flags=re.M)


def test_readme_has_examples():
    assert len(EXAMPLES) >= 2


@pytest.mark.parametrize("line", EXAMPLES)
def test_python_c_example_runs(line):
    args = shlex.split(line)
    assert args[:2] == ["python", "-c"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "GRADIO_ANALYTICS_ENABLED": "False"}
    r = subprocess.run([sys.executable, *args[1:]], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Traceback" not in r.stderr


def test_ci_runs_the_readme_test_command():
    ci = (REPO / ".ci" / "run").read_text()
    assert "python -m pytest -q" in README and ci.rstrip().endswith("python -m pytest -q")
    assert "pip install -r requirements-dev.txt" in README and "-r requirements-dev.txt" in ci


# ---------------------------------------------------------------------------------------
# what a newcomer reads in the command-line help


def _help(argv: list[str], main) -> str:
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), pytest.raises(SystemExit):
        main([*argv, "--help"])
    return buf.getvalue()


@pytest.mark.parametrize("sub", [[], ["run"], ["report"], ["download"], ["speed"], ["ablation"], ["probes"]])
def test_benchmark_help_is_plain_text(sub):
    from benchmark.__main__ import main

    text = _help(sub, main)
    assert "usage: python -m benchmark" in text
    for markup in ("``", "::\n", ":class:", ":func:", ":mod:", "\n====", "**", "DESIGN.md"):
        assert markup not in text, (sub, markup)


def _actions(parse):
    """The argparse actions of a command line whose parser is built inside ``parse``."""
    import argparse

    built = []
    real = argparse.ArgumentParser.parse_args

    def grab(self, *a, **k):
        built.append(self)
        raise SystemExit(0)

    argparse.ArgumentParser.parse_args = grab
    try:
        with pytest.raises(SystemExit):
            parse()
    finally:
        argparse.ArgumentParser.parse_args = real
    return built[0]._actions


def test_every_training_flag_and_run_seed_have_help():
    from benchmark.__main__ import main
    from iunet.train import parse_args

    missing = [a.option_strings for a in _actions(lambda: parse_args([])) if not a.help]
    assert missing == []
    run_help = _help(["run"], main)
    seed = run_help[run_help.index("\n  --seed SEED"):]
    assert "seed of the robots' random clicks" in " ".join(seed.split()[:20])


def test_train_help_example_keeps_its_line_break():
    from iunet.train import parse_args

    lines = _help([], lambda argv: parse_args(argv)).splitlines()
    i = next(k for k, ln in enumerate(lines) if "--preset agnostic --labels" in ln)
    assert lines[i].rstrip().endswith("\\") and lines[i + 1].strip().startswith("--totalseg")


def test_readme_synthetic_figures_are_the_summarys():
    """The README's synthetic figures are the ritm rows of the summary its command wrote."""
    summary = (REPO / "docs" / "results" / "synthetic_summary.md").read_text()
    ritm = summary[summary.index("## Robot `ritm`"):]
    row = next(ln for ln in ritm.splitlines() if ln.startswith("| IU-Net, dynamic") and "synthetic" in ln)
    at = dict(zip((1, 2, 5, 10, 15), (float(c) for c in row.strip("|").split("|")[2:7])))
    text = " ".join(README.split())
    want = " / ".join(f"{at[k]:.1f}" for k in (1, 2, 5, 10))
    assert f"class-agnostic IU-Net (dynamic) {want} at 1 / 2 / 5 / 10 clicks" in text
    cmd = "python -m benchmark run --weights weights/iunet_agnostic.safetensors"
    assert cmd in README and "iunet_agnostic.safetensors" in summary
