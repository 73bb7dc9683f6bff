"""sasq: quantized deployment of visual autoregressive (VAR) image models.

The pipeline's stages are subpackages: ``sasq.models`` (PyTorch reference), ``sasq.exporter``,
``sasq.calib``, ``sasq.engines`` and ``sasq.tools`` (CLI, decoding loop, evaluation).
"""

__version__ = "0.1.0"
