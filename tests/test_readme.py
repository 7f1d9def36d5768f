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
