"""``sasq serve``: an export on Triton Inference Server, through nvidia-pytriton.

One Triton model, ``sasq``. Each row of a request is one image: ``class_label`` (INT64 [1])
and, optionally, ``seed`` (INT64 [1], default 0), ``cfg`` (FP32 [1]), ``top_k`` (INT64 [1])
and ``top_p`` (FP32 [1]) (defaults: the export's sampling). It returns ``image`` (UINT8
[H, W, 3], the tile ``sasq generate`` draws), ``tokens_<si>`` (INT64 [pn*pn] per scale) and
``error`` (BYTES [1], empty when the row is fine).

Triton's dynamic batcher groups requests; an instance decodes the group as one batch with
``generate_rows``: every row has its own generator, CFG, top-k and top-p, so a row returns
exactly what ``sasq generate --class C --n 1 --seed S`` returns for its label and seed
(ONNX Runtime's CPU logits of a row do not depend on the rows beside it; tested). With
``--more-smooth`` an instance still takes the group at once but decodes it row by row: the
soft latent's GEMM rounds differently at another batch size.

Malformed requests: Triton itself rejects a wrong dtype, a wrong shape, a missing
``class_label`` and a batch above ``max_batch`` before batching. A bad value (an unknown
class, a negative cfg, top-k above the vocabulary) is found here; pytriton reports errors
per batch, not per request, so to keep valid requests batched beside it whole, such a row
gets zeros and its message in ``error``, and a batch with no valid row at all (a lone bad
request) fails with that message as a Triton error. Either way the server keeps serving.

``pytriton`` starts the ``tritonserver`` binary it ships, whose Python-backend stub links the
interpreter's shared ``libpython``: with a shared-library build (pyenv, python.org) that
library's folder must be on the stub's ``LD_LIBRARY_PATH`` (else: ``libpython3.12.so.1.0:
cannot open shared object file``), which ``_libpython_on_loader_path`` sets in this process's
environment before the server starts; the server is a child process and inherits it.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import signal
import socket
import sysconfig
import threading
from pathlib import Path

import numpy as np
import torch

from sasq.engines.backends import KINDS
from sasq.engines.decode import Row, StepBackend, generate_rows
from sasq.engines.trt_plan import BatchRange
from sasq.errors import UserError
from sasq.models import ModelConfig, SamplingConfig
from sasq.tools.serve.config import ServeConfig

MODEL_NAME = "sasq"
SERVE_MISSING = "the serving extra is not installed: pip install 'sasq[serve]'"
log = logging.getLogger("sasq")


def require_pytriton() -> None:
    """One line naming the extra when nvidia-pytriton is missing."""
    if importlib.util.find_spec("pytriton") is None:
        raise UserError(SERVE_MISSING)


def _libpython_on_loader_path() -> None:
    """Put the shared libpython's folder on ``LD_LIBRARY_PATH`` for the tritonserver child
    (its Python-backend stub links libpython; see the module docstring). No-op for a static
    build, or when the folder is already there."""
    if not sysconfig.get_config_var("Py_ENABLE_SHARED"):
        return
    libdir = sysconfig.get_config_var("LIBDIR")
    parts = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
    if libdir and libdir not in parts:
        os.environ["LD_LIBRARY_PATH"] = os.pathsep.join([libdir, *parts])


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """n distinct ports free on ``host`` now (the OS picks them)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _require_free(host: str, ports: list[int]) -> None:
    """A port already taken is a one-line error before Triton starts (it would fail later,
    with its log as the only explanation)."""
    for port in ports:
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError as e:
                raise UserError(
                    f"cannot listen on {host}:{port} ({e.strerror}); sasq serve uses --port, "
                    "--port+1 (gRPC) and --port+2 (metrics): choose another --port, or 0"
                ) from None


def to_uint8_hwc(img_BCHW: torch.Tensor) -> np.ndarray:
    """[-1, 1] images -> uint8 (B, H, W, 3), the same conversion ``sasq generate``'s grid uses."""
    from sasq.tools.report.image_grid import _to_rgb_uint8

    return _to_rgb_uint8(img_BCHW)


class RowHandler:
    """One model instance: its own backend; Triton requests in, per-request outputs out."""

    def __init__(self, cfg: ModelConfig, backend: StepBackend, more_smooth: bool):
        self.cfg, self.backend, self.more_smooth = cfg, backend, more_smooth
        self.pns = tuple(cfg.var.patch_nums)
        self.K, self.V = cfg.var.num_classes, cfg.vqvae.vocab_size
        self._lock = threading.Lock()  # a backend holds one batch's state at a time

    def parse(self, request) -> list[Row]:
        """A request's rows; ``ValueError`` with a one-line reason for a bad value."""
        labels = np.asarray(request["class_label"]).reshape(-1)
        n = len(labels)

        def column(name: str, default):
            if name not in request:
                return [default] * n
            values = np.asarray(request[name]).reshape(-1)
            if len(values) != n:
                raise ValueError(f"{name} has {len(values)} rows, class_label {n}")
            return values.tolist()

        base = self.cfg.sampling
        rows = []
        for c, seed, g, k, p in zip(
            labels.tolist(),
            column("seed", 0),
            column("cfg", base.cfg),
            column("top_k", base.top_k),
            column("top_p", base.top_p),
            strict=True,
        ):
            if not 0 <= c < self.K:
                raise ValueError(f"class_label {c} is not a class of this model (0..{self.K - 1})")
            if not 0 <= seed < 2**63:
                raise ValueError(f"seed {seed} is not in 0..2^63-1")
            if not (np.isfinite(g) and 0 <= g <= 100):
                raise ValueError(f"cfg {g} is not in 0..100")
            if not 0 <= k <= self.V:
                raise ValueError(f"top_k {k} is not in 0..{self.V} (0: off)")
            if not (np.isfinite(p) and 0 <= p <= 1):
                raise ValueError(f"top_p {p} is not in 0..1 (0: off)")
            sampling = SamplingConfig(float(g), int(k), float(p), self.more_smooth)
            rows.append(Row(int(c), int(seed), sampling))
        return rows

    def run(self, requests: list) -> list[dict[str, np.ndarray] | str]:
        """Per request (a mapping of input name to array): its outputs, or a one-line
        message when a value is bad. The good requests' rows are decoded as one batch."""
        parsed: list[list[Row] | str] = []
        for request in requests:
            try:
                parsed.append(self.parse(request))
            except (ValueError, KeyError, TypeError, OverflowError) as e:
                parsed.append(" ".join(str(e).split()) or type(e).__name__)
        rows = [r for p in parsed if not isinstance(p, str) for r in p]
        if rows:
            with self._lock:
                images, tokens = self._decode(rows)
        out: list[dict[str, np.ndarray] | str] = []
        at = 0
        for p in parsed:
            if isinstance(p, str):
                out.append(p)
                continue
            sl = slice(at, at + len(p))
            at += len(p)
            res = {"image": images[sl], "error": np.array([[b""]] * len(p), dtype=object)}
            res.update({f"tokens_{si}": t[sl] for si, t in enumerate(tokens)})
            out.append(res)
        return out

    def __call__(self, requests: list) -> list[dict[str, np.ndarray]]:
        """PyTriton's entry: errors are per batch there, so a bad request batched beside
        good ones gets zeros and its message in ``error``; a batch of only bad ones fails."""
        results = self.run(requests)
        if all(isinstance(r, str) for r in results):
            raise ValueError("; ".join(results))
        return [
            self._error_rows(int(np.asarray(q["class_label"]).size), r) if isinstance(r, str) else r
            for q, r in zip(requests, results, strict=True)
        ]

    def _decode(self, rows: list[Row]) -> tuple[np.ndarray, list[np.ndarray]]:
        """uint8 images and per-scale tokens of the rows, as one batch. With ``more_smooth``
        row by row: the soft latent's GEMM rounds differently at another batch size (images
        off by float round-off, measured on ORT CPU), and exactness comes first."""
        groups = [[r] for r in rows] if self.more_smooth else [rows]
        gens = [generate_rows(self.backend, g, self.pns, self.K, self.more_smooth) for g in groups]
        images = to_uint8_hwc(torch.cat([g.img for g in gens]))
        tokens = [torch.cat([g.idx[si] for g in gens]).numpy() for si in range(len(self.pns))]
        return images, tokens

    def _error_rows(self, n: int, message: str) -> dict[str, np.ndarray]:
        H = W = self.cfg.vqvae.image_size
        res = {
            "image": np.zeros((n, H, W, 3), np.uint8),
            "error": np.array([[message.encode()]] * n, dtype=object),
        }
        res.update(
            {f"tokens_{si}": np.zeros((n, pn * pn), np.int64) for si, pn in enumerate(self.pns)}
        )
        return res


# The model's inputs: one value per row; name, dtype, optional.
INPUTS = (
    ("class_label", np.int64, False),
    ("seed", np.int64, True),
    ("cfg", np.float32, True),
    ("top_k", np.int64, True),
    ("top_p", np.float32, True),
)


def outputs(cfg: ModelConfig) -> list[tuple[str, type, tuple[int, ...]]]:
    """The model's outputs per row: name, dtype, shape."""
    H = W = cfg.vqvae.image_size
    return [
        ("image", np.uint8, (H, W, 3)),
        ("error", bytes, (1,)),
        *((f"tokens_{si}", np.int64, (pn * pn,)) for si, pn in enumerate(cfg.var.patch_nums)),
    ]


def _tensors(cfg: ModelConfig):
    from pytriton.model_config import Tensor

    inputs = [Tensor(name=n, dtype=t, shape=(1,), optional=o) for n, t, o in INPUTS]
    return inputs, [Tensor(name=n, dtype=t, shape=shape) for n, t, shape in outputs(cfg)]


def host_threads_one() -> None:
    """One torch thread for the host's share of decoding (CFG mixing, top-k / top-p and
    sampling over a few hundred tokens): torch's pool only contends with ONNX Runtime's.
    Measured on the shared 2-core machine, tiny default, ORT 1 thread: 104 -> 17 ms per image
    at batch 1, 1139 -> 126 ms at batch 16. Process-wide, so only where sasq owns the process
    (``sasq serve``, the Python-backend stub), not in ``Server`` itself."""
    torch.set_num_threads(1)


def _model_config(onnx_dir: Path) -> ModelConfig:
    from sasq.exporter import verify

    return ModelConfig.from_dict(verify(onnx_dir).model_config)


def check_config(sc: ServeConfig) -> None:
    """Flag values in range: one-line errors before anything starts."""
    if not 1 <= sc.max_batch <= 4096:
        raise UserError(f"--max-batch must be in 1..4096, got {sc.max_batch}")
    if not 0 <= sc.max_queue_delay_ms <= 60_000:
        raise UserError(f"--max-queue-delay-ms must be in 0..60000, got {sc.max_queue_delay_ms}")
    if not 1 <= sc.instances <= 64:
        raise UserError(f"--instances must be in 1..64, got {sc.instances}")
    if not (sc.port == 0 or 1 <= sc.port <= 65533):
        raise UserError(f"--port must be 0 (free ports) or 1..65533, got {sc.port}")
    if sc.backend not in KINDS or KINDS[sc.backend].model:  # the server holds no PyTorch model
        served = ", ".join(k for k, kind in KINDS.items() if not kind.model)
        raise UserError(f"--backend {sc.backend!r} cannot serve an export; choose from {served}")


class Server:
    """The Triton server of one export; ``start()`` returns once the model is ready."""

    def __init__(self, sc: ServeConfig):
        check_config(sc)
        kind = KINDS[sc.backend]
        if kind.gpu:
            from sasq.engines.trt_device import gpu_count
            from sasq.engines.trt_plan import load_plan_info

            # a simulated plan (sasq build --simulate) runs anywhere; everything else needs a GPU
            simulated = (
                kind.plan and sc.engine is not None and load_plan_info(Path(sc.engine)).simulated
            )
            if not simulated and gpu_count() == 0:
                raise UserError(
                    f"--backend {sc.backend} needs an NVIDIA GPU, and no CUDA GPU is visible "
                    "here; serve with --backend ort"
                )
        require_pytriton()
        self.sc = sc
        self.cfg = _model_config(sc.onnx_dir)
        if sc.port == 0:
            self.ports = free_ports(3, sc.host)
        else:
            self.ports = [sc.port, sc.port + 1, sc.port + 2]
            _require_free(sc.host, self.ports)
        self._triton = None

    @property
    def url(self) -> str:
        return f"http://{self.sc.host}:{self.ports[0]}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.sc.host}:{self.ports[2]}/metrics"

    def _handlers(self) -> list[RowHandler]:
        """One backend per instance, built before Triton starts: a missing GPU, TensorRT or
        a broken export is a one-line error, not a server that fails its first request."""
        from sasq.engines.backends import make_backend
        from sasq.models.memory import Estimate, generation_estimate, require_fits

        sc = self.sc
        one = generation_estimate(self.cfg, sc.max_batch, images=sc.max_batch)
        need = Estimate(one.parts * sc.instances)
        what = f"serving {sc.instances} instance(s) of batch {sc.max_batch}"
        require_fits(need, what, "lower --max-batch or --instances")
        smooth = self.cfg.sampling.more_smooth if sc.more_smooth is None else sc.more_smooth
        batches = BatchRange(1, sc.max_batch, sc.max_batch)  # what Triton's batcher sends
        handlers = []
        for _ in range(sc.instances):
            b = make_backend(sc.backend, None, sc.onnx_dir, sc.threads, sc.engine, batches)
            if (limits := getattr(b, "batch_range", None)) is not None:
                limits.check(sc.max_batch, "serve --max-batch")  # a plan built for fewer
            handlers.append(RowHandler(self.cfg, b, smooth))
        return handlers

    def start(self) -> str:
        from pytriton.model_config import DynamicBatcher
        from pytriton.model_config import ModelConfig as TritonModelConfig
        from pytriton.triton import Triton, TritonConfig

        handlers = self._handlers()
        _libpython_on_loader_path()
        http, grpc, metrics = self.ports
        host = self.sc.host
        config = TritonConfig(
            http_address=host,
            http_port=http,
            grpc_address=host,
            grpc_port=grpc,
            metrics_address=host,
            metrics_port=metrics,
            exit_timeout_secs=self.sc.exit_timeout_s,
            log_verbose=0,
        )
        self._triton = Triton(config=config)
        ins, outs = _tensors(self.cfg)
        batcher = DynamicBatcher(
            max_queue_delay_microseconds=int(round(self.sc.max_queue_delay_ms * 1000))
        )
        self._triton.bind(
            model_name=MODEL_NAME,
            infer_func=handlers,
            inputs=ins,
            outputs=outs,
            config=TritonModelConfig(max_batch_size=self.sc.max_batch, batcher=batcher),
            strict=True,
        )
        self._triton.run()
        return self.url

    def is_alive(self) -> bool:
        return self._triton is not None and self._triton.is_alive()

    def stop(self) -> None:
        """Triton stops taking requests, lets in-flight ones finish (``exit_timeout_s``)."""
        if self._triton is not None:
            self._triton.stop()
            self._triton = None

    def __enter__(self) -> Server:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def serve_forever(sc: ServeConfig) -> dict:
    """Start, print the ready line, serve until SIGTERM / SIGINT, then stop gracefully."""
    server = Server(sc)
    host_threads_one()
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        url = server.start()
        print(
            f"sasq serve: ready at {url} (model '{MODEL_NAME}', backend {sc.backend}, "
            f"{sc.instances} instance(s), max batch {sc.max_batch}); "
            f"health {url}/v2/health/ready, metrics {server.metrics_url}, "
            f"gRPC {sc.host}:{server.ports[1]}; stop with SIGTERM or Ctrl+C",
            flush=True,
        )
        while not stop.wait(1.0):
            if not server.is_alive():
                raise UserError("the Triton server exited on its own (see its log above)")
    finally:
        server.stop()
        for s, h in previous.items():
            signal.signal(s, h)
    return {"url": url, "stopped": "signal"}
