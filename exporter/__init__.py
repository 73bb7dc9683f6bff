"""sasq.exporter: see DESIGN.md."""

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
