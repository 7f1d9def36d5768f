"""The web app's parts that are not UI layout (app.py is the Gradio layer and the Spaces entry point).

* :mod:`.models` — checkpoint discovery, the shared predictors (one per checkpoint, loaded by
  :func:`.models.configure`), the precision chosen for this machine, the ZeroGPU tasks;
* :mod:`.batching` — a micro-batch queue that runs concurrent users' clicks in one forward pass;
* :mod:`.annotation` — one browser tab's state: its CT, per-slice clicks and masks, exports;
* :mod:`.sessions` — every tab's annotation with its memory: freed when the page closes or after
  an idle time, new images refused beyond the memory budget;
* :mod:`.rendering` — the slice with mask, contour and clicks, and the weight-map heat map.

No gradio import here, so all of it is tested as plain Python.
"""
