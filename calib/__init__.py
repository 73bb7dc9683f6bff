"""sasq.calib: calibration of the FP model for int8 Q/DQ (docs/architecture.md, "The
pipeline"), one job per module:

- ``calibrate``: rollouts of the FP export through the decoding loop -> a range cache;
- ``resample``: codebook resampling of each scale's tokens (Shift-and-Sum), a decode hook;
- ``selection``: distribution-guided choice of calibration rows (PTQ4ARVG's DGC);
- ``observers`` (+ ``thresholds``): streaming ranges (minmax, percentile, entropy, mse);
- ``gps``: PTQ4ARVG's gain-projected scaling; ``data_reader``: ORT calibration interop.

The cache format, scales and quantization targets are ``sasq.quant``'s (shared with the
exporter). Submodules are imported on use, so ``import sasq.calib`` stays light.
"""
