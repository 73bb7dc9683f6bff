"""sasq.calib: see DESIGN.md.

Calibration of the FP model for int8 Q/DQ, one job per module:

- ``resample``: codebook resampling of each scale's tokens (Shift-and-Sum), a decode hook;
- ``selection``: distribution-guided choice of calibration rows (PTQ4ARVG's DGC);
- ``recorder``: the MatMul/Gemm inputs of an ONNX graph, recorded under ONNX Runtime;
- ``observers`` (+ ``thresholds``): streaming ranges (minmax, percentile, entropy, mse)
  and per-channel weight scales;
- ``cache``: the versioned, diffable JSON (+ .npz) of ranges and attention statistics.

Submodules are imported on use, so ``import sasq.calib`` stays light.
"""
