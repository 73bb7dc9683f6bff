"""sasq serve: an export on Triton Inference Server, or a model repository for a stock one."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sasq.tools.cli import groups
from sasq.tools.cli import types as T

NAME = "serve"
HELP = "serve an export on Triton Inference Server (dynamic batching, per-request seeds)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from sasq.engines.backends import KINDS
    from sasq.tools.cli.fields import option
    from sasq.tools.serve.config import ServeConfig

    groups.onnx(p, required=True, help="export folder to serve (required)")
    groups.backend(
        p,
        ServeConfig.backend,
        kinds=[k for k, kind in KINDS.items() if not kind.model],  # the server holds no model
        help="ort / ort-cuda / ort-trt: ONNX Runtime's CPU / CUDA / TensorRT provider; trt: "
        "a TensorRT engine (--engine); default: ort",
    )
    option(
        p,
        "--host",
        ServeConfig,
        "host",
        help="address to listen on (0.0.0.0 for every interface); default: 127.0.0.1",
    )
    option(
        p,
        "--port",
        ServeConfig,
        "port",
        type=T.int_in(0, 65533),
        help="HTTP port; gRPC uses port+1 and metrics port+2 (0: free ports); default: 8000",
    )
    option(
        p,
        "--max-batch",
        ServeConfig,
        "max_batch",
        type=T.int_in(1, 4096),
        help="largest batch Triton's dynamic batcher forms (and largest request); default: 16",
    )
    option(
        p,
        "--max-queue-delay-ms",
        ServeConfig,
        "max_queue_delay_ms",
        type=T.float_in(0.0, 60_000.0),
        help="how long a request may wait for others to batch with; default: 5",
    )
    option(
        p,
        "--instances",
        ServeConfig,
        "instances",
        type=T.int_in(1, 64),
        help="model instances (Triton instance group), each with its own backend; default: 1",
    )
    groups.threads(
        p,
        ServeConfig.threads,
        "ONNX Runtime intra-op threads per instance (0: ONNX Runtime's default, every "
        "core); scale with --instances rather than threads on a small or shared machine; "
        "default: 1",
    )
    p.add_argument(
        "--more-smooth",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="Gumbel-softmax smoothing for every request; default: the export's setting",
    )
    p.add_argument(
        "--write-repo",
        default=None,
        metavar="OUT",
        help="write a Triton model repository of the export (Python backend, for a stock "
        "tritonserver with sasq installed) to the new folder OUT and exit; default: serve",
    )


def run(args: argparse.Namespace) -> int:
    from sasq.tools.serve.config import ServeConfig
    from sasq.tools.serve.server import serve_forever

    sc = ServeConfig(
        onnx_dir=Path(args.onnx),
        backend=args.backend,
        host=args.host,
        port=args.port,
        max_batch=args.max_batch,
        max_queue_delay_ms=args.max_queue_delay_ms,
        instances=args.instances,
        threads=args.threads,
        engine=None if args.engine is None else Path(args.engine),
        more_smooth=args.more_smooth,
    )
    if args.write_repo is not None:
        from sasq.tools.serve.triton_repo import write_repository

        model = write_repository(sc, Path(args.write_repo))
        print(json.dumps({"repository": str(Path(args.write_repo)), "model": str(model)}))
        return 0
    print(json.dumps(serve_forever(sc)))
    return 0
