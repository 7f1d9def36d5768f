"""Reports of a run folder, computed from ``results.csv`` and ``run.json`` alone (so a partial run
can be reported): ``summary.md`` (the paper's Table II layout plus NoC, AUC, 3D Dice, timing; the
``volume`` protocol's 3D table) and ``dice_vs_clicks.png``.
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from iunet.clicks import ClickSize
from iunet.metrics import auc, noc
from iunet.robot import VOLUME_PROTOCOLS

from .results import SYNTHETIC_BANNER, read_rows

TABLE2_CLICKS = (1, 2, 5, 10, 15)  # the paper's Table II columns
EXTRA_CLICKS = (3, 20)
VOLUME_CLICKS = (1, 2, 3, 5, 10)  # 3D Dice columns of the volume protocol
NOC_THRESHOLDS = (0.80, 0.85, 0.90)
VOLUME_NOC_THRESHOLDS = (0.85, 0.90)
# Paper, Table II: DSC (%) after 1, 2, 5, 10, 15 interactions (experiment 9 = "Ours"; IU-Net [3]).
PAPER_TABLE2 = {
    "Spleen": {"Paper: Ours (exp. 9)": (75.83, 77.70, 78.27, 79.49, 81.96), "Paper: IU-Net [3]": (70.97, 71.63, 73.07, 77.14, 79.32)},
    "Colon": {"Paper: Ours (exp. 9)": (74.30, 76.96, 77.49, 78.25, 80.87), "Paper: IU-Net [3]": (65.71, 66.18, 69.65, 72.22, 74.43)},
}
PROTOCOL_NOTES = {
    "paper": "the paper's random interaction: a positive click inside the object and a negative one in a 20 px band around it (k counts these pairs, as in the paper's Table II)",
    "ritm": "one click at the deepest error pixel (RITM / Xu et al.); k counts clicks",
    "component": "one click at the deepest point of the largest connected error region; k counts clicks",
    "volume": "clicks anywhere in the volume: one click at the deepest point of the largest 3D connected error component "
              "(on that component's slice), then the method re-segments the volume (IU-Net: propagation through "
              "iunet.inference.VolumeSession); k counts clicks per volume",
}


def paper_task(task: str, synthetic: bool) -> str | None:
    """"Spleen" / "Colon" when the run's data is that MSD task (the paper's numbers then apply)."""
    if synthetic:
        return None
    t = task.lower()
    return "Spleen" if "spleen" in t else "Colon" if "colon" in t else None


# ---------------------------------------------------------------------------------------
# statistics


def curves(rows: list[dict]) -> dict[tuple[str, str], dict[tuple[str, int], dict[str, np.ndarray]]]:
    """Per (method, protocol) and (case, slice): arrays over k = 1..K of dice, ms, n_clicks and the
    pixel counts (inter, pred, gt) that make 3D Dice. Slices whose curve is incomplete are dropped."""
    acc: dict = defaultdict(lambda: defaultdict(dict))
    for r in rows:  # slice "" = a whole volume (volume protocol)
        acc[(r["method"], r["protocol"])][(r["case"], int(r["slice"]) if r["slice"] != "" else None)][int(r["click"])] = r
    out: dict = {}
    for key, per_slice in acc.items():
        kmax = max(max(d) for d in per_slice.values())
        out[key] = {}
        for s, by_k in per_slice.items():
            if sorted(by_k) != list(range(1, kmax + 1)):
                continue
            col = lambda f: np.array([float(by_k[k][f]) if by_k[k].get(f, "") != "" else np.nan for k in range(1, kmax + 1)])  # noqa: E731
            out[key][s] = {"dice": col("dice"), "ms": col("ms"), "n_clicks": col("n_clicks"), "inter": col("inter_px"),
                           "pred": col("pred_px"), "gt": col("gt_px"), "z_err": col("z_err_slices")}
    return out


def stats(per_slice: dict[tuple[str, int], dict[str, np.ndarray]]) -> dict:
    """Mean Dice per k, NoC@{80,85,90} with failures, AUC, per-case 3D Dice, precision and recall
    per k (pixels pooled over the case's slices; NaN where nothing was predicted / there is
    nothing to find), ms per click."""
    d = np.stack([c["dice"] for c in per_slice.values()])  # (slices, K)
    K = d.shape[1]
    nocs = {t: [noc(row, t) for row in d] for t in sorted(set(NOC_THRESHOLDS) | set(VOLUME_NOC_THRESHOLDS))}
    by_case: dict[str, list] = defaultdict(list)
    for (case, _), c in per_slice.items():
        by_case[case].append(c)
    dice3d, precision, recall = {}, {}, {}
    for case, cs in by_case.items():
        inter, pred, gt = (sum(c[f] for c in cs) for f in ("inter", "pred", "gt"))
        dice3d[case] = np.where(pred + gt > 0, 2 * inter / np.maximum(pred + gt, 1), 1.0)
        precision[case] = np.where(pred > 0, inter / np.maximum(pred, 1), np.nan)
        recall[case] = np.where(gt > 0, inter / np.maximum(gt, 1), np.nan)
    ms = np.nansum([c["ms"] for c in per_slice.values()])
    n_clicks = sum(c["n_clicks"][-1] for c in per_slice.values())
    n_pred = sum(np.isfinite(c["ms"]).sum() for c in per_slice.values())
    z_err = np.stack([c.get("z_err", np.full(K, np.nan)) for c in per_slice.values()])
    return {
        "n_slices": d.shape[0], "n_cases": len(by_case), "K": K, "dice": d.mean(0),
        "noc": {t: (float(np.mean([n for n, _ in v])), int(sum(f for _, f in v))) for t, v in nocs.items()},
        "auc": float(np.mean([auc(row) for row in d])), "dice3d": dice3d, "precision": precision, "recall": recall,
        "ms_per_click": float(ms / (n_clicks if n_clicks else max(n_pred, 1))),
        # volume protocol: mean z-extent error (slices) per k, and seconds per volume for all K clicks
        "z_err": z_err.mean(0) if np.isfinite(z_err).all() else None,
        "s_per_volume": float(np.mean([np.nansum(c["ms"]) for c in per_slice.values()]) / 1000.0),
    }


# ---------------------------------------------------------------------------------------
# markdown and plot


def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def _at(dice: np.ndarray, k: int) -> str:
    return _pct(dice[k - 1]) if k <= len(dice) else "n/a"


def precision_recall_lines(table: dict, unit: str) -> list[str]:
    """Markdown lines: per case, each method's precision / recall (%) after the first and the
    last interaction, pixels (``unit``) pooled over the case. ``table[method]`` = :func:`stats`."""
    K = max(s["K"] for s in table.values())
    pair = lambda p, r: "–" if not (np.isfinite(p) and np.isfinite(r)) else f"{_pct(p)} / {_pct(r)}"  # noqa: E731
    lines = ["", f"Precision / recall per case (%, {unit} pooled over the case), after 1 → {K}: a precision well under "
             "the recall means the masks take in too much (a leak), the reverse too little.", "",
             "| Case | " + " | ".join(table) + " |", "|---|" + "---:|" * len(table)]
    for c in sorted({c for s in table.values() for c in s["precision"]}):
        cells = []
        for s in table.values():
            p, r = s["precision"].get(c), s["recall"].get(c)
            cells.append("–" if p is None else f"{pair(p[0], r[0])} → {pair(p[-1], r[-1])}")
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    return lines


def markdown(meta: dict, table: dict, protocols: list[str], methods: list[str]) -> str:
    """The summary page. ``table[(method, protocol)]`` = :func:`stats`."""
    cfg, labels = meta["config"], meta.get("methods", {})
    task = paper_task(meta.get("task", ""), meta.get("synthetic", False))
    ct = task or meta.get("task", "?")
    n_slices = max((s["n_slices"] for (_, p), s in table.items() if p not in VOLUME_PROTOCOLS), default=0)
    env = meta.get("environment", {})
    first = f" (first click {cfg['radius_px']:g} px)" if cfg.get("alpha") else ""
    lines = ["# Benchmark: Dice versus clicks", ""]
    if meta.get("synthetic"):
        lines += [f"> **{SYNTHETIC_BANNER}**", ""]
    lines += [
        f"- Data: `{cfg['data']}` (task: {meta.get('task')}), {len(cfg['cases'])} cases, "
        + (f"{n_slices} slices ({'all slices with foreground' if cfg['slices'] == 'all' else 'the largest slice of each case'})"
           if any(p not in VOLUME_PROTOCOLS for p in protocols) else "whole volumes")
        + "; split in `split.json`"
        + (f"; **every {cfg['thick_slices']} axial slices averaged into one** (`--thick-slices`: a thicker-slice scan of the same patients)"
           if cfg.get("thick_slices", 1) > 1 else "")
        + (f"; **{cfg['thin_slices'] - 1} interpolated slice{'s' if cfg['thin_slices'] > 2 else ''} between neighbours** "
           "(`--thin-slices`: a proxy for a thinner-slice scan of the same patients)"
           if cfg.get("thin_slices", 1) > 1 else "")
        + (f"; **slices padded with air to a {cfg['fov_mm']:g} mm field of view** (`--fov-mm`: a scanner with a larger field of view)"
           if cfg.get("fov_mm") else "")
        + (f"; **Gaussian noise of {cfg['noise_hu']:g} HU added** (`--noise-hu`: a lower-dose scan)"
           if cfg.get("noise_hu") else ""),
        *(f"- **Data check**: `{name}`: {note} (`benchmark.datasets.upsampling_note`)" for name, note in sorted((meta.get("data_notes") or {}).items())),
        f"- Up to {cfg['max_clicks']} interactions; click size of iunet-dynamic and the classical methods: "
        f"{ClickSize(cfg['radius_px'], cfg['alpha']).describe()}{first}, fixed size {cfg['radius_px']:g} px; seed {cfg['seed']}",
        "- Checkpoints: " + ("; ".join(f"{name} `{Path(ck['path']).name}` ({ck.get('name')})" for name, key, prefix in (("IU-Net", "weights", "iunet"), ("U-Net", "unet_weights", "unet"))
                                      if (ck := (meta.get("checkpoints") or {}).get(key)) and any(m.startswith(prefix) for m in methods)) or "none (classical methods only)")
        + (f"; **geodesic click maps drawn with λ = {cfg['geodesic_lambda']:g}, not the checkpoint's** (`--geodesic-lambda`, a diagnostic)"
           if cfg.get("geodesic_lambda") is not None else "")
        + (f"; **geodesic click maps with noise reference {cfg['geodesic_noise_ref']:g}, not the checkpoint's** (`--geodesic-noise-ref`, a diagnostic)"
           if cfg.get("geodesic_noise_ref") is not None else "")
        + ("; **propagation without looking for small carried masks again** (`--no-small-carry`, a diagnostic)"
           if cfg.get("small_carry") is False else "")
        + (f"; **propagation carries background clicks {cfg['carry_negative_mm']:g} mm** (`--carry-negative-mm`, a diagnostic)"
           if cfg.get("carry_negative_mm") is not None else "")
        + ((f"; **re-propagation keeps a slice's mask where it grows over {cfg['regrow_limit']:g}× into other tissue**" if cfg["regrow_limit"] > 0
            else "; **re-propagation may grow a slice's mask into any tissue**") + " (`--regrow-limit`, a diagnostic)"
           if cfg.get("regrow_limit") is not None else "")
        + ((f"; **a foreground click's re-propagation keeps a slice's mask where it would cut it to under {cfg['shrink_limit']:g} of its area**"
            if cfg["shrink_limit"] > 0 else "; **a foreground click's re-propagation may cut a slice's mask to any size**")
           + " (`--shrink-limit`, a diagnostic)" if cfg.get("shrink_limit") is not None else "")
        + ("; **ZoomOut without zooming in** (`--no-zoom-in`, a diagnostic)" if cfg.get("zoom_in") is False else "")
        + ("; **ZoomOut without the focus view** (`--no-focus`, a diagnostic)" if cfg.get("focus") is False else "")
        + ("; **ZoomOut without the clicked-centre zoom-in** (`--no-centre-zoom`, a diagnostic)" if cfg.get("centre_zoom") is False else "")
        + ("; **ZoomOut without the organ around a click on fat** (`--no-fat-zoom`, a diagnostic)" if cfg.get("fat_zoom") is False else "")
        + ("; **first clicks not refined** (`--no-zoom-refine`, a diagnostic)" if cfg.get("zoom_refine") is False else "")
        + ("; **per slice, the IU-Nets not shown the mask so far** (`--no-prev-mask`, a diagnostic)" if cfg.get("prev_mask") is False else ""),
        f"- Device: {meta.get('options', {}).get('device')}; commit {env.get('git_commit')}{' (uncommitted changes)' if env.get('git_dirty') else ''}; status: {meta.get('status')}",
        ("- Dice in %, mean over slices; NoC = clicks (under `paper`: interactions, each a pair of clicks) to reach the Dice (max when never reached; failures in brackets);"
         " AUC = normalised area under the Dice curve; 3D Dice = per case, from the stacked scored slices, mean over cases;"
         " ms/click = the method's time per click (for the automatic U-Net: per slice)."
         if any(p not in VOLUME_PROTOCOLS for p in protocols) else
         "- 3D Dice in %, per volume (case × structure), mean over volumes; the volume robot's section below says what each column means."),
        "",
    ]
    for proto in protocols:
        rows = [m for m in methods if (m, proto) in table]
        if not rows:
            continue
        if proto in VOLUME_PROTOCOLS:
            lines += volume_section(proto, {m: table[(m, proto)] for m in rows}, {**labels, **meta.get("volume_methods", {})})
            continue
        K = table[(rows[0], proto)]["K"]
        lines += [f"## Robot `{proto}`", "", f"{PROTOCOL_NOTES.get(proto, '')}.", "", "Layout of the paper's Table II (DSC % after k interactions):", ""]
        lines += ["| Model | CT | " + " | ".join(str(k) for k in TABLE2_CLICKS) + " |", "|---|---|" + "---:|" * len(TABLE2_CLICKS)]
        for m in rows:
            lines.append(f"| {labels.get(m, m)} | {ct} | " + " | ".join(_at(table[(m, proto)]["dice"], k) for k in TABLE2_CLICKS) + " |")
        if proto == "paper":  # the paper's k counts its random pairs: comparable under this robot only
            for name, vals in PAPER_TABLE2.get(task, {}).items():
                lines.append(f"| *{name}* | {task} | " + " | ".join(f"*{v:.2f}*" for v in vals) + " |")
            if task is None:
                lines += ["", "(The paper's values are shown only for MSD Spleen or Colon data.)"]
        elif task is not None:
            lines += ["", "(The paper's Table II counts random positive / negative pairs: its values are beside the `paper` robot only.)"]
        heads = [f"Dice@{k}" for k in EXTRA_CLICKS] + [f"NoC@{int(100 * t)}" for t in NOC_THRESHOLDS] + ["AUC", "3D Dice@1", f"3D Dice@{K}", "ms/click"]
        lines += ["", "| Method | " + " | ".join(heads) + " |", "|---|" + "---:|" * len(heads)]
        for m in rows:
            s = table[(m, proto)]
            cells = [_at(s["dice"], k) for k in EXTRA_CLICKS]
            cells += [f"{s['noc'][t][0]:.2f} ({s['noc'][t][1]}/{s['n_slices']})" for t in NOC_THRESHOLDS]
            d3 = np.stack(list(s["dice3d"].values()))
            cells += [f"{s['auc']:.4f}", _pct(d3[:, 0].mean()), _pct(d3[:, -1].mean()), f"{s['ms_per_click']:.1f}"]
            lines.append(f"| {labels.get(m, m)} | " + " | ".join(cells) + " |")
        cases = sorted({c for m in rows for c in table[(m, proto)]["dice3d"]})
        lines += ["", f"3D Dice per case (%), after 1 / {K} interactions:", "", "| Case | " + " | ".join(rows) + " |", "|---|" + "---:|" * len(rows)]
        for c in cases:
            cells = []
            for m in rows:
                v = table[(m, proto)]["dice3d"].get(c)
                cells.append("–" if v is None else f"{_pct(v[0])} / {_pct(v[-1])}")
            lines.append(f"| {c} | " + " | ".join(cells) + " |")
        lines += precision_recall_lines({m: table[(m, proto)] for m in rows}, "pixels of its scored slices")
        lines.append("")
    return "\n".join(lines)


def volume_section(proto: str, table: dict, labels: dict) -> list[str]:
    """Markdown lines of the ``volume`` protocol: 3D Dice after k clicks per volume, NoC@85/90 in
    3D, the z-extent error and the seconds per click and per volume. ``table[method]`` = :func:`stats`
    over volumes (one "slice" per case and structure)."""
    K = max(s["K"] for s in table.values())
    heads = [f"3D Dice@{k}" for k in VOLUME_CLICKS] + [f"NoC@{int(100 * t)}" for t in VOLUME_NOC_THRESHOLDS]
    heads += [f"z-extent error @1 / @{K} (slices)", "s/click", f"s/volume ({K} clicks)"]
    lines = [f"## Robot `{proto}` (3D, per volume)", "", f"{PROTOCOL_NOTES.get(proto, '')}.", "",
             "3D Dice in %, mean over volumes (case × structure); NoC in clicks per volume (failures in brackets); "
             "z-extent error = the larger distance, in slices, between the predicted and the true first / last slice "
             "of the structure (mean over volumes); s/click includes the re-propagation.", "",
             "| Method | " + " | ".join(heads) + " |", "|---|" + "---:|" * len(heads)]
    for m, s in table.items():
        cells = [_at(s["dice"], k) for k in VOLUME_CLICKS]
        cells += [f"{s['noc'][t][0]:.2f} ({s['noc'][t][1]}/{s['n_slices']})" for t in VOLUME_NOC_THRESHOLDS]
        z = s["z_err"]
        cells += ["n/a" if z is None else f"{z[0]:.1f} / {z[-1]:.1f}", f"{s['ms_per_click'] / 1000:.2f}", f"{s['s_per_volume']:.1f}"]
        lines.append(f"| {labels.get(m, m)} | " + " | ".join(cells) + " |")
    cases = sorted({c for s in table.values() for c in s["dice3d"]})
    lines += ["", f"3D Dice per volume (%), after 1 / {K} clicks:", "", "| Case | " + " | ".join(table) + " |", "|---|" + "---:|" * len(table)]
    for c in cases:
        cells = []
        for s in table.values():
            v = s["dice3d"].get(c)
            cells.append("–" if v is None else f"{_pct(v[0])} / {_pct(v[-1])}")
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    lines += precision_recall_lines(table, "voxels")
    lines.append("")
    return lines


def plot(path: Path, meta: dict, table: dict, protocols: list[str], methods: list[str]) -> None:
    """Mean Dice vs k, one panel per protocol, one line per method (the paper's Table II as crosses)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    task = paper_task(meta.get("task", ""), meta.get("synthetic", False))
    fig, axes = plt.subplots(1, len(protocols), figsize=(5.5 * len(protocols), 4.2), squeeze=False, sharey=True)
    first_2d = next((ax for ax, p in zip(axes[0], protocols) if p not in VOLUME_PROTOCOLS), axes[0][0])
    for ax, proto in zip(axes[0], protocols):
        volume = proto in VOLUME_PROTOCOLS
        labels = {**meta.get("methods", {}), **(meta.get("volume_methods", {}) if volume else {})}
        for m in methods:
            if (m, proto) in table:
                d = table[(m, proto)]["dice"]
                ax.plot(np.arange(1, len(d) + 1), 100 * d, marker="o", ms=3, label=labels.get(m, m))
        if volume and ax is not first_2d:  # the 3D methods are labelled on their own panel
            ax.legend(fontsize=7, frameon=False, loc="lower right")
        if task and proto == "paper":  # the paper's k counts pairs: only beside the paper robot
            ax.plot(TABLE2_CLICKS, PAPER_TABLE2[task]["Paper: Ours (exp. 9)"], "kx", ms=8, label="paper, Table II (exp. 9)")
        ax.set(title=f"robot: {proto}" + (" (3D Dice per volume)" if volume else ""),
               xlabel="interactions" if proto == "paper" else "clicks per volume" if volume else "clicks", ylim=(0, 100))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("Dice (%)")
    handles, names = first_2d.get_legend_handles_labels()
    for ax, proto in zip(axes[0], protocols):  # the paper's crosses may be on another 2D panel
        if ax is not first_2d and proto not in VOLUME_PROTOCOLS:
            for h, n in zip(*ax.get_legend_handles_labels()):
                if n not in names:
                    handles, names = handles + [h], names + [n]
    ncol = max(1, min(len(names), 3 if len(protocols) > 1 else 1))  # one panel: one label per line
    fig.legend(handles, names, loc="lower center", ncol=ncol, fontsize=8, frameon=False)
    title = "SYNTHETIC DATA (toy slices)" if meta.get("synthetic") else f"{meta.get('task')}"
    fig.suptitle(f"Dice vs clicks: {title}")
    fig.tight_layout(rect=(0, 0.06 + 0.045 * ((len(names) - 1) // ncol), 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_reports(out: str | Path) -> tuple[Path, Path]:
    """(Re)write summary.md and dice_vs_clicks.png of a run folder from its results.csv and run.json."""
    out = Path(out)
    meta = json.loads((out / "run.json").read_text())
    rows = read_rows(out / "results.csv")
    if not rows:
        raise SystemExit(f"{out}/results.csv holds no rows yet")
    table = {k: stats(v) for k, v in curves(rows).items() if v}
    protocols = [p for p in meta["config"]["protocols"] if any(k[1] == p for k in table)]
    methods = [m for m in meta["config"]["methods"] if any(k[0] == m for k in table)]
    md, png = out / "summary.md", out / "dice_vs_clicks.png"
    md.write_text(markdown(meta, table, protocols, methods))
    plot(png, meta, table, protocols, methods)
    return md, png
