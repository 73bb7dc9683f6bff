"""Speed, measured: ``sasq bench`` (FP and int8 side by side, per scale, with spread;
``bench``), ``sasq profile`` (ONNX Runtime's per-op profile by scale and role;
``op_profile``), plain GEMM rates of the model's shapes (``matmul_peak``), every scale against the
machine's limit (``roofline``, with the memory bandwidth: ``bandwidth``) and whether a
timing held steady (``steadiness``). May import ``report``."""

__all__ = ["bench", "config", "op_profile", "roofline", "steadiness"]
