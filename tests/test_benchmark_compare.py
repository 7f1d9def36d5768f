"""``python -m benchmark compare``: paired differences between two runs (or two methods of one
run), unit by unit, with a bootstrap interval that excludes 0 only for a real difference."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from benchmark.__main__ import main
from benchmark.compare import ALL, CASES, Side, compare, paired_bootstrap
from benchmark.results import FIELDS, read_rows


def _write_run(folder: Path, dice: dict[str, dict[tuple[str, int | None], list[float]]], protocol: str = "ritm",
               data: str = "d") -> Path:
    """A run folder whose results.csv holds ``dice[method][(case, slice)]`` = Dice after 1..K."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, FIELDS)
        w.writeheader()
        for method, units in dice.items():
            for (case, sl), curve in units.items():
                for k, d in enumerate(curve, 1):
                    w.writerow({"case": case, "slice": "" if sl is None else sl, "method": method, "protocol": protocol,
                                "click": k, "n_clicks": k, "dice": d, "ms": 1.0, "inter_px": 1, "pred_px": 1, "gt_px": 1,
                                "z_err_slices": 0 if sl is None else ""})
    (folder / "run.json").write_text(json.dumps({"config": {"data": data}}))
    return folder


def _units(rng, n_cases=3, n_slices=40, k=3, base=0.7, shift=0.0, noise=0.05):
    return {(f"p:s{c}", s): list(np.clip(base + 0.05 * np.arange(k) + shift + noise * rng.standard_normal(k), 0, 1))
            for c in range(n_cases) for s in range(n_slices)}


def test_bootstrap_interval_covers_a_known_mean_difference():
    rng = np.random.default_rng(1)
    cases = np.repeat(np.arange(4), 50)
    diff = 0.03 + 0.02 * rng.standard_normal((200, 2))
    lo, hi = paired_bootstrap(cases, diff, resamples=500, seed=0)
    assert np.all(lo < 0.03) and np.all(hi > 0.03) and np.all(lo > 0)  # covers the truth, excludes 0
    lo0, hi0 = paired_bootstrap(cases, diff - diff.mean(0), resamples=500, seed=0)
    assert np.all(lo0 < 0) and np.all(hi0 > 0)  # no difference: the interval holds 0
    # the same seed, the same interval; a single case resamples its units only
    assert np.array_equal(paired_bootstrap(cases, diff, 200, 3)[0], paired_bootstrap(cases, diff, 200, 3)[0])
    lo1, hi1 = paired_bootstrap(np.zeros(200, int), diff, 300, 0)
    assert lo1[0] < diff[:, 0].mean() < hi1[0]


def test_compare_pairs_units_and_reports_per_case_and_pooled(tmp_path):
    rng = np.random.default_rng(0)
    a_units = _units(rng)
    b_units = {u: [v + 0.04 for v in c] for u, c in a_units.items()}  # B better by 4 points on every unit
    b_units[("p:s9", 0)] = [0.1, 0.1, 0.1]  # a unit only B has: not compared
    a = read_rows(_write_run(tmp_path / "a", {"m": a_units}) / "results.csv")
    b = read_rows(_write_run(tmp_path / "b", {"m": b_units}) / "results.csv")
    res = compare(Side(tmp_path / "a", "m"), Side(tmp_path / "b", "m"), a, b, clicks=(1, 3, 10), resamples=300)
    r = res["ritm"]
    assert r["units"] == 120 and r["ks"] == [1, 3]  # k beyond the curves is left out
    assert set(r["rows"]) == {"p:s0", "p:s1", "p:s2", ALL, CASES}
    for row in r["rows"].values():
        assert np.allclose(row["b"] - row["a"], 0.04) and np.all(row["lo"] > 0.03) and np.all(row["hi"] < 0.05)
    assert r["rows"][ALL]["n"] == 120 and r["rows"][CASES]["n"] == 3
    # the cases' row weighs each case the same, the pooled one each unit
    lopsided = {u: c for u, c in a_units.items() if u[0] != "p:s0" or u[1] < 4}
    r = compare(Side(tmp_path / "a", "m"), Side(tmp_path / "b", "m"), a, [x for x in b if (x["case"], int(x["slice"])) in lopsided],
                clicks=(1,), resamples=100)["ritm"]["rows"]
    assert np.isclose(r[CASES]["a"][0], np.mean([r[c]["a"][0] for c in ("p:s0", "p:s1", "p:s2")]))
    assert not np.isclose(r[CASES]["a"][0], r[ALL]["a"][0])


def test_compare_cli_two_runs_and_two_methods_of_one_run(tmp_path, capsys):
    rng = np.random.default_rng(2)
    same = _units(rng, n_cases=1)
    _write_run(tmp_path / "a", {"iunet": same, "rw": {u: [v - 0.2 for v in c] for u, c in same.items()}})
    _write_run(tmp_path / "b", {"iunet": {u: [v + rng.normal(0, 0.01) for v in c] for u, c in same.items()}})
    main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--methods", "iunet", "--resamples", "200",
          "--out", str(tmp_path / "cmp.md")])
    out = capsys.readouterr().out
    assert "A = `a` → B = `b`" in out and "| all (pooled, as summary.md) | 40 |" in out
    assert (tmp_path / "cmp.md").read_text().strip() == out.strip()
    assert "**" not in out.split("## Protocol")[1]  # noise only: no interval excludes 0
    main(["compare", str(tmp_path / "a"), "--methods", "iunet", "rw", "--clicks", "1", "--resamples", "200"])
    out = capsys.readouterr().out
    assert "A = `iunet` → B = `rw`" in out and "(**-20.0** [" in out


@pytest.mark.parametrize("argv,needle", [
    (["{a}"], "name two of its methods: --methods A B (it has: iunet, rw)"),
    (["{a}", "{b}"], "several methods in common (iunet, rw); name the one to compare"),
    (["{a}", "{b}", "--methods", "nope"], "has no results of method nope (it has: iunet, rw)"),
    (["{a}", "{c}"], "no slice or volume has complete results in both"),
    (["{a}", "{missing}"], "is not a folder; give the --out folder of a benchmark run"),
    (["{a}", "{empty}"], "is not a benchmark run folder: no results.csv"),
])
def test_compare_refuses_in_one_line(tmp_path, capsys, argv, needle):
    rng = np.random.default_rng(3)
    u = _units(rng, n_cases=1, n_slices=5)
    paths = {"a": _write_run(tmp_path / "a", {"iunet": u, "rw": u}), "b": _write_run(tmp_path / "b", {"iunet": u, "rw": u}),
             "c": _write_run(tmp_path / "c", {"iunet": {("other:x", 0): [0.5, 0.6, 0.7]}, "rw": u}, data="other"),
             "missing": tmp_path / "missing", "empty": tmp_path / "empty"}
    (tmp_path / "empty").mkdir()
    if argv == ["{a}", "{c}"]:
        argv = [*argv, "--methods", "iunet"]
    with pytest.raises(SystemExit) as e:
        main(["compare", *[a.format(**{k: str(v) for k, v in paths.items()}) for a in argv]])
    assert needle in str(e.value)
    assert "Traceback" not in capsys.readouterr().err


def test_compare_volumes_pairs_whole_volumes(tmp_path):
    """The volume protocol's units are whole volumes (no slice); each case is one unit."""
    a_units = {(f"p:s{c}", None): [0.5 + 0.1 * c, 0.8, 0.9] for c in range(4)}
    b_units = {u: [c[0] + 0.1, c[1], c[2] - 0.05] for u, c in a_units.items()}
    a = read_rows(_write_run(tmp_path / "a", {"m": a_units}, protocol="volume") / "results.csv")
    b = read_rows(_write_run(tmp_path / "b", {"m": b_units}, protocol="volume") / "results.csv")
    r = compare(Side(tmp_path / "a", "m"), Side(tmp_path / "b", "m"), a, b, clicks=(1, 2, 3), resamples=200)["volume"]
    assert r["units"] == 4 and r["rows"][ALL]["n"] == 4 and r["rows"]["p:s0"]["n"] == 1
    assert np.allclose(r["rows"][ALL]["b"] - r["rows"][ALL]["a"], [0.1, 0.0, -0.05])
    assert np.allclose(r["rows"][ALL]["lo"], [0.1, 0.0, -0.05]) and np.allclose(r["rows"][ALL]["hi"], [0.1, 0.0, -0.05])
    # four volumes that all moved the same way: an interval that excludes 0, but too few units to call it
    from benchmark.compare import markdown

    md = markdown(Side(tmp_path / "a", "m"), Side(tmp_path / "b", "m"),
                  compare(Side(tmp_path / "a", "m"), Side(tmp_path / "b", "m"), a, b, clicks=(1,), resamples=200), 200)
    assert "(+10.0 [+10.0, +10.0], 4 units: too few to tell)" in md and "**" not in md.split("## Protocol")[1]


def test_one_unit_gets_no_interval(tmp_path):
    """One volume (a 3D run on one case) has no spread to resample: no interval, nothing bold."""
    a = read_rows(_write_run(tmp_path / "a", {"m": {("s:x", None): [0.5, 0.6]}}, protocol="volume") / "results.csv")
    b = read_rows(_write_run(tmp_path / "b", {"m": {("s:x", None): [0.6, 0.6]}}, protocol="volume") / "results.csv")
    res = compare(Side(tmp_path / "a", "m"), Side(tmp_path / "b", "m"), a, b, clicks=(1, 2), resamples=50)
    row = res["volume"]["rows"][ALL]
    assert row["n"] == 1 and np.isnan(row["lo"]).all() and np.isnan(row["hi"]).all()
    from benchmark.compare import markdown

    md = markdown(Side(tmp_path / "a", "m"), Side(tmp_path / "b", "m"), res, 50)
    assert "50.0 → 60.0 (+10.0, one unit: no interval)" in md and "**" not in md.split("## Protocol")[1]
