"""sasq.exporter: torch -> ONNX, the export manifest, and the quantized (Q/DQ) graphs
(docs/architecture.md, "The pipeline" and "An export folder")."""

from sasq.exporter.attention import attention_chains
from sasq.exporter.config import ExportConfig
from sasq.exporter.export import export_model
from sasq.exporter.manifest import Manifest, ScaleShapes, load_manifest, step_io_names, verify

__all__ = [
    "ExportConfig",
    "Manifest",
    "ScaleShapes",
    "attention_chains",
    "export_model",
    "load_manifest",
    "step_io_names",
    "verify",
]
