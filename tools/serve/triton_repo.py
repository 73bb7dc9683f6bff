"""A Triton model repository of an export, for a stock ``tritonserver`` (``sasq serve
--write-repo OUT``): ``OUT/sasq/config.pbtxt`` (the same inputs, outputs, dynamic batcher and
instance group as ``sasq serve``), ``OUT/sasq/1/model.py`` (a Python-backend model, the
``TritonPythonModel`` below) and ``OUT/sasq/1/export/`` (a copy of the export, so the
repository is whole on any machine). The Python environment the backend runs needs sasq
installed (``pip install 'sasq[cpu]'``); the server then needs no PyTriton.

Here errors are per request (a Python-backend model answers each request on its own), so a
bad value fails exactly its request, batched or not.

``bundled_tritonserver`` runs such a repository on the ``tritonserver`` binary PyTriton
ships (used by the tests; the binary and its Python stub as PyTriton itself sets them up).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np

from sasq.errors import UserError
from sasq.exporter.out_swap import staged_export
from sasq.models import ModelConfig
from sasq.tools.serve.config import ServeConfig
from sasq.tools.serve.server import (
    INPUTS,
    MODEL_NAME,
    RowHandler,
    _libpython_on_loader_path,
    _model_config,
    check_config,
    host_threads_one,
    outputs,
)

_TRITON_TYPES = {np.int64: "TYPE_INT64", np.float32: "TYPE_FP32", np.uint8: "TYPE_UINT8",
                 bytes: "TYPE_STRING"}  # fmt: skip
_MODEL_PY = '''"""A sasq export as a Triton Python-backend model (sasq serve --write-repo)."""

from sasq.tools.serve.triton_repo import TritonPythonModel  # noqa: F401
'''


def config_pbtxt(sc: ServeConfig, cfg: ModelConfig, threads: int) -> str:
    """The model configuration, in Triton's text format: the tensors of ``sasq serve``."""
    inputs = ",\n".join(
        f'  {{ name: "{n}" data_type: {_TRITON_TYPES[t]} dims: [ 1 ]'
        f"{' optional: true' if o else ''} }}"
        for n, t, o in INPUTS
    )
    outs = [
        f'  {{ name: "{n}" data_type: {_TRITON_TYPES[t]} dims: [ {", ".join(map(str, shape))} ] }}'
        for n, t, shape in outputs(cfg)
    ]
    smooth = "" if sc.more_smooth is None else str(sc.more_smooth).lower()
    delay_us = int(round(sc.max_queue_delay_ms * 1000))
    joined = ",\n".join(outs)
    return f"""name: "{MODEL_NAME}"
backend: "python"
max_batch_size: {sc.max_batch}
dynamic_batching {{ max_queue_delay_microseconds: {delay_us} }}
instance_group [ {{ count: {sc.instances} kind: KIND_CPU }} ]
input [
{inputs}
]
output [
{joined}
]
parameters [
  {{ key: "threads" value: {{ string_value: "{threads}" }} }},
  {{ key: "more_smooth" value: {{ string_value: "{smooth}" }} }}
]
"""


def write_repository(sc: ServeConfig, out: Path) -> Path:
    """``out`` (a new folder) holding the model repository; returns the model's folder."""
    if sc.backend != "ort":
        raise UserError("--write-repo writes an ONNX Runtime CPU model (--backend ort)")
    out = Path(out)
    if out.exists():
        raise UserError(f"{out}: exists; --write-repo needs a new folder")
    check_config(sc)
    cfg = _model_config(sc.onnx_dir)
    with staged_export(out) as tmp:  # built beside ``out``, renamed into place when whole
        model = tmp / MODEL_NAME
        (model / "1").mkdir(parents=True)
        shutil.copytree(sc.onnx_dir, model / "1" / "export")
        (model / "config.pbtxt").write_text(config_pbtxt(sc, cfg, sc.threads))
        (model / "1" / "model.py").write_text(_MODEL_PY)
    return out / MODEL_NAME


class TritonPythonModel:
    """Triton's Python-backend interface over ``RowHandler``: one instance, one backend."""

    def initialize(self, args: dict) -> None:
        from sasq.engines.backends import make_backend

        host_threads_one()

        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        export = Path(args["model_repository"]) / str(args["model_version"]) / "export"
        cfg = _model_config(export)
        smooth = params.get("more_smooth", "")
        more_smooth = cfg.sampling.more_smooth if smooth == "" else smooth == "true"
        backend = make_backend("ort", None, export, int(params.get("threads", "1")))
        self.handler = RowHandler(cfg, backend, more_smooth)
        self.inputs = [i["name"] for i in config["input"]]

    def execute(self, requests: list) -> list:
        import triton_python_backend_utils as pb_utils

        feeds = []
        for request in requests:
            feed = {}
            for name in self.inputs:
                tensor = pb_utils.get_input_tensor_by_name(request, name)
                if tensor is not None:
                    feed[name] = tensor.as_numpy()
            feeds.append(feed)
        responses = []
        for result in self.handler.run(feeds):
            if isinstance(result, str):
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(result)))
            else:
                tensors = [pb_utils.Tensor(k, v) for k, v in result.items()]
                responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses


def bundled_tritonserver(repo: Path, work: Path, ports: list[int]) -> tuple[list[str], dict]:
    """argv and environment to run ``repo`` on PyTriton's ``tritonserver`` binary: its files
    copied to ``work`` with the Python stub of this interpreter's version, the stub's
    libpython and this environment's packages visible to it."""
    import pytriton

    dist = Path(pytriton.__file__).parent / "tritonserver"
    server = Path(work) / "tritonserver"
    shutil.copytree(dist, server, ignore=shutil.ignore_patterns("python_backend_stubs"))
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    stub = dist / "python_backend_stubs" / version / "triton_python_backend_stub"
    shutil.copy(stub, server / "backends" / "python" / "triton_python_backend_stub")
    _libpython_on_loader_path()
    env = os.environ.copy()
    libs = Path(pytriton.__file__).parent.parent / "nvidia_pytriton.libs"
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        p for p in (env.get("LD_LIBRARY_PATH", ""), str(libs)) if p
    )
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    http, grpc, metrics = ports
    argv = [
        str(server / "bin" / "tritonserver"),
        f"--model-repository={repo}",
        f"--backend-directory={server / 'backends'}",
        "--http-address=127.0.0.1",
        f"--http-port={http}",
        "--grpc-address=127.0.0.1",
        f"--grpc-port={grpc}",
        "--metrics-address=127.0.0.1",
        f"--metrics-port={metrics}",
        "--exit-timeout-secs=5",
    ]
    return argv, env
