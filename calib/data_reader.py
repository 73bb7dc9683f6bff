"""Interop with ONNX Runtime's quantization: calibration data both ways.

``record_step_feeds`` captures the step graph's own inputs during sasq's rollouts (with the
same resampling), and a ``FeedsReader`` (``sasq.exporter.peer``, its consumer) hands them
to ORT's ``quantize_static`` as a ``CalibrationDataReader``, so the peer quantizer sees
exactly our calibration data.
``ranges_from_reader`` goes the other way: any ``CalibrationDataReader`` of step-graph
feeds drives our observers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader

from sasq.calib.observers import ObserverConfig, make_observer
from sasq.engines.recorder import ActivationRecorder
from sasq.errors import UserError
from sasq.exporter.peer import FeedsReader
from sasq.files import atomic_path
from sasq.quant.cache import TensorRange
from sasq.quant.settings import ObserverMethod
from sasq.quant.targets import quantizable_inputs


def record_step_feeds(onnx_dir: str | Path, cfg) -> FeedsReader:
    """Roll out like ``calibrate`` (same config) and keep every step run's input feeds."""
    from sasq.calib.calibrate import _rollouts
    from sasq.exporter.manifest import verify
    from sasq.models.config import ModelConfig

    onnx_dir = Path(onnx_dir)
    manifest = verify(onnx_dir)
    model_cfg = ModelConfig.from_dict(manifest.model_config)
    inputs = [t.name for t in manifest.graphs["step"].inputs]
    K = model_cfg.var.num_classes
    feeds: list[dict[str, np.ndarray]] = []

    def keep(si: int, recorded: dict[str, np.ndarray]) -> None:
        feeds.append({n: np.ascontiguousarray(recorded[n]) for n in inputs})

    labels = [i % K for i in range(cfg.num_samples)]
    _rollouts(onnx_dir, labels, cfg, inputs, keep, model_cfg, "record feeds")
    return FeedsReader(feeds)


def save_feeds(reader: FeedsReader, path: str | Path) -> Path:
    """All feeds in one npz (``{run}/{input}`` keys), written atomically."""
    path = Path(path)
    arrays = {f"{i}/{k}": v for i, f in enumerate(reader.feeds) for k, v in f.items()}
    with atomic_path(path, suffix=".npz") as tmp:  # np.savez appends .npz to other names
        np.savez(tmp, **arrays)
    return path


def load_feeds(path: str | Path) -> FeedsReader:
    try:
        data = np.load(path)
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: not a feeds file ({e})") from None
    runs: dict[int, dict[str, np.ndarray]] = {}
    for key in data.files:
        i, name = key.split("/", 1)
        runs.setdefault(int(i), {})[name] = data[key]
    return FeedsReader([runs[i] for i in sorted(runs)])


def ranges_from_reader(
    step_model: onnx.ModelProto,
    reader: CalibrationDataReader,
    observer: ObserverMethod = ObserverMethod.MINMAX,
    ocfg: ObserverConfig | None = None,
) -> dict[str, TensorRange]:
    """Observer ranges of every quantizable input, from feeds a reader yields (no steps)."""
    names = list(dict.fromkeys(a for t in quantizable_inputs(step_model) for a in t.activations))
    rec = ActivationRecorder(step_model, names)
    obs = {n: make_observer(observer, ocfg) for n in names}
    while (feeds := reader.get_next()) is not None:
        _, recorded = rec.run(feeds)
        for n, v in recorded.items():
            obs[n].update(v)
    return {n: TensorRange(amax=float(o.range())) for n, o in obs.items()}
