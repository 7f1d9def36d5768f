"""``python -m benchmark compare A [B]``: is one method (or checkpoint) better than another on the
same slices, or only different by chance?

Two run folders of the same data and protocol (e.g. the shipped weights and a candidate, both
``--methods iunet-zoomout``), or two methods of one run folder (``--methods iunet-zoomout
random-walker``), are compared unit by unit: the same slice (per-slice protocols) or the same
volume (``volume``) after the same number of clicks. For each structure (case) and for all of
them together, the table gives A's and B's mean Dice after k clicks, the difference B − A and a
95 % interval for it from a paired bootstrap (docs/benchmark.md, "Comparing two runs"): cases
are drawn with replacement, then units within each drawn case, and the same draw is applied to
both sides, so what varies is the set of slices, not the pairing. The pooled mean (all units
of all cases) is the statistic that ``summary.md`` reports.

Neighbouring slices of one structure are alike, so slices are not independent samples: with one
patient the interval says how much the mean would move over other slices *like these*, and is
narrower than a spread over patients would be. Volumes (``volume``) are few: a difference is
called only when the bootstrap drew from at least ``MIN_UNITS`` top-level units.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .download import int_at_least
from .report import curves
from .results import read_rows, require_run_folder

DEFAULT_CLICKS = (1, 2, 3, 5, 10)
DEFAULT_RESAMPLES = 2000
ALL = "all"  # the row of all units of all cases together (pooled, as summary.md)
# a difference is called (bold) only when its interval excludes 0 and the bootstrap drew from at
# least this many top-level units (the cases of a row with several, else its slices or volumes):
# a percentile bootstrap of 4 volumes that all moved the same way gives an interval that
# excludes 0, yet 4 units cannot tell (even a sign-flip test could not go below p = 1/8)
MIN_UNITS = 5
CASES = "cases"  # the row of the cases' means, each case weighing the same (the README's means of structures)


@dataclass(frozen=True)
class Side:
    """One side of a comparison: a run folder and a method in it."""

    folder: Path
    method: str

    def label(self, other: "Side") -> str:
        if self.folder == other.folder:
            return self.method
        return f"{self.folder.name}" if self.method == other.method else f"{self.folder.name}:{self.method}"


def paired_units(curves_a: dict, curves_b: dict) -> tuple[list[tuple[str, int | None]], np.ndarray, np.ndarray]:
    """The units (case, slice) both sides have complete curves for, in a fixed order, and their
    Dice arrays (units, K) for A and B, K the shorter of the two curves."""
    units = sorted(set(curves_a) & set(curves_b), key=lambda u: (u[0], -1 if u[1] is None else u[1]))
    if not units:
        return [], np.zeros((0, 0)), np.zeros((0, 0))
    k = min(len(curves_a[units[0]]["dice"]), len(curves_b[units[0]]["dice"]))
    da = np.stack([curves_a[u]["dice"][:k] for u in units])
    db = np.stack([curves_b[u]["dice"][:k] for u in units])
    return units, da, db


def paired_bootstrap(cases: np.ndarray, diff: np.ndarray, resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                     level: float = 0.95, per_case: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """A ``level`` interval (lo, hi), each (K,), for the mean of ``diff`` (units, K) over units,
    by a two-stage bootstrap: draw the cases (``cases`` (units,), a label per unit) with
    replacement, then units within each drawn case with replacement, and pool them (``per_case``:
    average the drawn cases' own means instead, each case weighing the same). One case: units
    only. Percentile interval of ``resamples`` draws (``seed``)."""
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(cases == c) for c in np.unique(cases)]
    means = np.empty((resamples, diff.shape[1]))
    for r in range(resamples):
        picked = rng.integers(0, len(groups), len(groups)) if len(groups) > 1 else np.zeros(1, int)
        draws = [groups[g][rng.integers(0, len(groups[g]), len(groups[g]))] for g in picked]
        means[r] = np.mean([diff[i].mean(0) for i in draws], 0) if per_case else diff[np.concatenate(draws)].mean(0)
    tail = 100 * (1 - level) / 2
    return np.percentile(means, tail, axis=0), np.percentile(means, 100 - tail, axis=0)


def compare(side_a: Side, side_b: Side, rows_a: list[dict], rows_b: list[dict], clicks=DEFAULT_CLICKS,
            resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> dict[str, dict]:
    """Per protocol both sides ran: ``{"units": n, "ks": [...], "rows": {case, ALL or CASES: {"n":
    units (cases for CASES), "top": what the bootstrap's first stage drew from (cases, or units
    with one case), "a": (len(ks),), "b": ..., "lo": ..., "hi": ...}}}``, Dice as
    fractions; CASES (the mean of the cases' means) only with several cases. Protocols without
    common units are left out."""
    ca, cb = curves(rows_a), curves(rows_b)
    out: dict[str, dict] = {}
    protocols = sorted({p for m, p in ca if m == side_a.method} & {p for m, p in cb if m == side_b.method})
    for proto in protocols:
        units, da, db = paired_units(ca[(side_a.method, proto)], cb[(side_b.method, proto)])
        if not units:
            continue
        ks = [k for k in clicks if 1 <= k <= da.shape[1]]
        if not ks:
            continue
        cols = [k - 1 for k in ks]
        da, db = da[:, cols], db[:, cols]
        labels = np.array([u[0] for u in units])
        rows: dict[str, dict] = {}
        names = sorted(set(labels))
        for case in [*names, ALL]:
            sel = np.ones(len(units), bool) if case == ALL else labels == case
            n = int(sel.sum())
            lo, hi = paired_bootstrap(labels[sel], (db - da)[sel], resamples, seed) if n > 1 \
                else (np.full(len(cols), np.nan), np.full(len(cols), np.nan))  # one unit: no spread to draw from
            n_cases = len(set(labels[sel]))
            top = n_cases if n_cases > 1 else n  # what the bootstrap's first stage draws from
            rows[case] = {"n": n, "top": top, "a": da[sel].mean(0), "b": db[sel].mean(0), "lo": lo, "hi": hi}
        if len(names) == 1:  # one case: its row is the "all" row
            rows = {ALL: rows[ALL]}
        else:
            lo, hi = paired_bootstrap(labels, db - da, resamples, seed, per_case=True)
            rows[CASES] = {"n": len(names), "top": len(names), "a": np.mean([rows[c]["a"] for c in names], 0),
                           "b": np.mean([rows[c]["b"] for c in names], 0), "lo": lo, "hi": hi}
        out[proto] = {"units": len(units), "ks": ks, "rows": rows}
    return out


def _cell(a: float, b: float, lo: float, hi: float, top: int) -> str:
    d = b - a
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return f"{100 * a:.1f} → {100 * b:.1f} ({100 * d:+.1f}, one unit: no interval)"
    interval = f"[{100 * lo:+.1f}, {100 * hi:+.1f}]"
    if top < MIN_UNITS:
        return f"{100 * a:.1f} → {100 * b:.1f} ({100 * d:+.1f} {interval}, {top} units: too few to tell)"
    mark = "**" if lo > 0 or hi < 0 else ""  # the interval excludes no difference
    return f"{100 * a:.1f} → {100 * b:.1f} ({mark}{100 * d:+.1f}{mark} {interval})"


def markdown(side_a: Side, side_b: Side, result: dict[str, dict], resamples: int) -> str:
    la, lb = side_a.label(side_b), side_b.label(side_a)
    lines = [f"# Comparison: A = `{la}` → B = `{lb}`", "",
             f"- A: `{side_a.folder}`, method `{side_a.method}`; B: `{side_b.folder}`, method `{side_b.method}`",
             f"- Cells: A's mean Dice → B's (B − A [95 % interval, paired bootstrap of {resamples} draws over cases, then "
             "slices or volumes within them]), in %; in bold where the interval excludes 0 and it was drawn from at least "
             f"{MIN_UNITS} cases (or, with one case, slices or volumes). Neighbouring slices are alike, "
             "so with few patients the interval is narrower than a spread over patients would be.", ""]
    for proto, res in result.items():
        unit = "volumes" if proto == "volume" else "slices"
        lines += [f"## Protocol `{proto}` ({res['units']} {unit} in both)", "",
                  "| Case | n | " + " | ".join(f"after {k}" for k in res["ks"]) + " |",
                  "|---|---:|" + "---:|" * len(res["ks"])]
        for case, r in res["rows"].items():
            name = {ALL: "all (pooled, as summary.md)", CASES: "mean of the cases (each the same weight)"}.get(case, case)
            cells = [_cell(r["a"][i], r["b"][i], r["lo"][i], r["hi"][i], r["top"]) for i in range(len(res["ks"]))]
            lines.append(f"| {name} | {r['n']} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def _load(folder: Path) -> tuple[list[dict], dict]:
    require_run_folder(folder, ("results.csv",))  # run.json (the data it ran on) is only compared when present
    try:
        meta = json.loads((folder / "run.json").read_text()) if (folder / "run.json").is_file() else {}
    except json.JSONDecodeError as e:
        sys.exit(f"error: {folder / 'run.json'} is unreadable ({e})")
    return read_rows(folder / "results.csv"), meta


def _methods_in(rows: list[dict]) -> list[str]:
    return sorted({r["method"] for r in rows})


def sides(a: argparse.Namespace) -> tuple[Side, Side, list[dict], list[dict]]:
    """The two sides the command line asks for, with their rows; exits with a message otherwise."""
    fa = Path(a.run_a)
    rows_a, meta_a = _load(fa)
    if a.run_b is None:
        if not a.methods or len(a.methods) != 2:
            sys.exit(f"error: with one run folder, name two of its methods: --methods A B (it has: {', '.join(_methods_in(rows_a)) or 'none'})")
        ma, mb = a.methods
        fb, rows_b = fa, rows_a
    else:
        fb = Path(a.run_b)
        rows_b, meta_b = _load(fb)
        da, db = (m.get("config", {}).get("data") for m in (meta_a, meta_b))
        if da != db:
            print(f"note: the runs are on different data ({da} / {db}); only units both have are compared", file=sys.stderr)
        if a.methods and len(a.methods) > 2:
            sys.exit("error: --methods takes one method (the same in both runs) or two (A's, then B's)")
        if a.methods:
            ma, mb = a.methods[0], a.methods[-1]
        else:
            common = sorted(set(_methods_in(rows_a)) & set(_methods_in(rows_b)))
            if not common:
                sys.exit(f"error: the runs have no method in common ({', '.join(_methods_in(rows_a))} / {', '.join(_methods_in(rows_b))}); "
                         "name one of each: --methods A B")
            if len(common) > 1:
                sys.exit(f"error: the runs have several methods in common ({', '.join(common)}); name the one to compare: --methods M")
            ma = mb = common[0]
    for m, rows, f in ((ma, rows_a, fa), (mb, rows_b, fb)):
        if m not in _methods_in(rows):
            sys.exit(f"error: {f} has no results of method {m} (it has: {', '.join(_methods_in(rows)) or 'none'})")
    return Side(fa, ma), Side(fb, mb), rows_a, rows_b


def add_parser(sub) -> None:
    p = sub.add_parser("compare", help="paired comparison of two runs (or two methods of one run), with bootstrap intervals",
                       description=(__doc__.split("\n\n")[0] + " " + __doc__.split("\n\n")[1].replace("\n", " ")).replace("``", ""))
    p.add_argument("run_a", help="run folder A (the reference)")
    p.add_argument("run_b", nargs="?", help="run folder B (default: A, with two --methods)")
    p.add_argument("--methods", nargs="+", help="one method (in both runs) or two (A's, then B's); default: the one method both runs have")
    p.add_argument("--clicks", nargs="+", type=int_at_least(1), default=list(DEFAULT_CLICKS), help="after how many clicks (default 1 2 3 5 10)")
    p.add_argument("--resamples", type=int_at_least(1), default=DEFAULT_RESAMPLES, help=f"bootstrap draws (default {DEFAULT_RESAMPLES})")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--out", help="also write the Markdown table to this file")
    p.set_defaults(func=run)


def run(a: argparse.Namespace) -> None:
    side_a, side_b, rows_a, rows_b = sides(a)
    result = compare(side_a, side_b, rows_a, rows_b, tuple(a.clicks), a.resamples, a.seed)
    if not result:
        sys.exit(f"error: no slice or volume has complete results in both ({side_a.folder}:{side_a.method}, "
                 f"{side_b.folder}:{side_b.method}) under a common protocol: were they run on the same data and protocol?")
    md = markdown(side_a, side_b, result, a.resamples)
    if a.out:
        Path(a.out).write_text(md + "\n")
    print(md)
