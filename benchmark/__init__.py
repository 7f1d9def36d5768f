"""Benchmark of interactive CT segmentation: ``python -m benchmark run|report|download|speed|ablation``.

- ``run``: robot users click on an MSD task folder; Dice versus clicks for IU-Net (dynamic and
  fixed click size), the automatic U-Net and classical click-seeded baselines, side by side
  (DESIGN.md §2). Without ``--data`` it runs on a small synthetic dataset, and says so.
- ``report``: rewrite summary.md and the plot of a (possibly partial) run folder.
- ``download``: fetch an MSD task archive with resume, checksum and safe extraction.
- ``speed``: click-to-mask latency and batched throughput (CPU / CUDA, fp32 / bf16).
- ``ablation``: train and evaluate the paper's Table I variants on a small budget.

See docs/benchmark.md for the protocol and results.
"""
