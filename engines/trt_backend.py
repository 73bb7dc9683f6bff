"""The TensorRT backend of the decoding loop: the step graph as a TensorRT engine.

The small graphs around it (start tokens, per-scale transition, VQVAE decoder) run under
ONNX Runtime exactly as in ``OrtBackend``, which this class extends; only ``step`` runs the
engine, selecting the optimization profile of the scale. The KV cache stays in device
memory as torch CUDA tensors between steps; only the logits (which the host samples from)
come back to the host.

NOT YET RUN ON A GPU: no machine with TensorRT was available when this was written, so
this path is untested; ``sasq selftest --gpu`` is the check to run where one is.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from sasq.engines.ort_backend import OrtBackend, _numpy
from sasq.engines.ort_session import SessionConfig
from sasq.engines.trt_engine import require_tensorrt


class TrtBackend(OrtBackend):
    name = "trt"

    def __init__(self, onnx_dir: str | Path, plan: str | Path):
        require_tensorrt()
        from polygraphy.backend.common import BytesFromPath
        from polygraphy.backend.trt import EngineFromBytes, TrtRunner

        super().__init__(onnx_dir, SessionConfig(), io_binding=False)
        self._runner = TrtRunner(EngineFromBytes(BytesFromPath(str(plan))))
        self._runner.activate()
        self._past_dev: list[torch.Tensor] = []

    def __del__(self):
        runner = getattr(self, "_runner", None)
        if runner is not None and runner.is_active:
            runner.deactivate()

    def reset(self, label_2B: torch.Tensor) -> None:
        super().reset(label_2B)
        self._past_dev = [torch.from_numpy(_numpy(p)).cuda() for p in self._past]

    def step(self, si: int) -> torch.Tensor:
        if si != self._si:
            raise RuntimeError(f"step({si}) called at scale {self._si}")
        self._runner.set_profile(si)
        dev = [torch.from_numpy(np.ascontiguousarray(_numpy(v))).cuda()
               for v in (self._x, self._mod)]  # fmt: skip
        feeds = dict(zip(self._step_in, [*dev, *self._past_dev], strict=True))
        outs = self._runner.infer(feeds, copy_outputs_to_host=False)
        self._past_dev = [outs[n] for n in self._step_out[1:]]
        return outs[self._step_out[0]].float().cpu()
