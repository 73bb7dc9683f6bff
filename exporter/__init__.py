"""sasq.exporter: torch -> ONNX, the export manifest, and the quantized (Q/DQ) graphs
(docs/architecture.md, "The pipeline" and "An export folder")."""

import importlib

# Loaded on first use (PEP 562): the CLI reads ExportConfig and the quantization configs
# from their light modules without importing torch through export.py.
_HOMES = {
    "attention_chains": "attention",
    "ExportConfig": "config",
    "export_model": "export",
    "Manifest": "manifest",
    "ScaleShapes": "manifest",
    "load_manifest": "manifest",
    "step_io_names": "manifest",
    "verify": "manifest",
}


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
    globals()[name] = value
    return value


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
