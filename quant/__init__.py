"""sasq.quant: the quantization core that calibration, the exporter and the engines share.

- ``settings``: how a calibration was made (``CalibSettings``) and the names of its choices
  (observer, resampling, row selection);
- ``cache``: the versioned, diffable calibration cache (JSON + .npz of weight scales) and
  its ranges (``TensorRange``); ``validate`` checks every number of one read from disk;
- ``scales``: symmetric int8 scales from ranges (per tensor) and weights (per channel);
- ``targets``: which ops of an ONNX graph are quantized, and their inputs.

Why a package of its own rather than modules at the ``sasq`` root: the root holds what
every layer may import (errors, files, progress, the checks on strangers' files) and is
about no stage in particular; these modules are about quantization only. Why not in
``sasq.calib``: the exporter writes Q/DQ graphs from a
cache and the engines read one, while calibration drives the decoding loop in
``sasq.engines``; with the cache format in calib, exporter -> calib -> engines ->
exporter was a loop. So the layers are a stack (docs/architecture.md, "Who imports
whom"): sasq root <- models <- quant <- exporter <- engines <- calib <- tools.
"""
