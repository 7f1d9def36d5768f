"""Benchmark of interactive CT segmentation: ``python -m benchmark run|report|download|speed|ablation``.

- ``run``: robot users click on an MSD task folder (or one patient with a mask per structure);
  Dice versus clicks for IU-Net (dynamic and fixed click size), the automatic U-Net and
  classical click-seeded baselines, side by side (docs/design.md, "Protocols"); ``--protocols
  volume`` clicks on whole volumes (3D Dice). Without ``--data`` it runs on a small synthetic
  dataset, and says so.
- ``report``: rewrite summary.md and the plot of a (possibly partial) run folder.
- ``download``: fetch an MSD task archive with resume, checksum and safe extraction.
- ``speed``: click-to-mask latency and batched throughput (CPU / CUDA, fp32 / bf16).
- ``ablation``: train and evaluate the paper's Table I variants on a small budget.

See docs/benchmark.md for the protocol and results.
"""
from __future__ import annotations

import re


def plain_help(doc: str | None) -> str:
    """A module docstring as terminal help: reST markup (````code````, ``::``, ``:class:`x```,
    ``====`` table rules) turned into plain text."""
    text = doc or ""
    text = re.sub(r":\w+:`~?([^`]+)`", r"\1", text)  # :class:`iunet.x` -> iunet.x
    text = text.replace("``", "")
    text = re.sub(r"\*\*([^*\n]+)\*\*", r"\1", text)  # **bold**
    text = re.sub(r"::\n", ":\n", text)
    text = re.sub(r"^[ \t]*=+([ \t]+=+)*[ \t]*\n", "", text, flags=re.M)  # rules of simple tables
    return text.strip()
