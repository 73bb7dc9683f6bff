"""sasq: quantized deployment of visual autoregressive (VAR) image models.

The pipeline's stages are subpackages: ``sasq.models`` (PyTorch reference), ``sasq.exporter``,
``sasq.calib``, ``sasq.engines`` (the decoding loop and its backends) and ``sasq.tools``
(CLI, evaluation, training).
"""

__version__ = "0.1.0"
