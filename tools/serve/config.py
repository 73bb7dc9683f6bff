"""The configs of ``sasq serve`` and ``sasq loadtest``, light to import (the CLI builds its
flags from their fields without loading torch or pytriton)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ServeConfig:
    """port: HTTP; gRPC listens on port + 1 and metrics on port + 2 (port 0: three free
    ports). instances: Triton model instances, each with its own backend (one thread each)."""

    onnx_dir: Path
    backend: str = "ort"
    host: str = "127.0.0.1"
    port: int = 8000
    max_batch: int = 16
    max_queue_delay_ms: float = 5.0
    instances: int = 1
    threads: int = 1  # ONNX Runtime threads per instance; 0: ORT's default (every core)
    engine: Path | None = None
    more_smooth: bool | None = None  # None: the export's sampling setting
    exit_timeout_s: int = 30  # in-flight requests get this long to finish on shutdown


@dataclass(frozen=True)
class LoadConfig:
    url: str
    concurrency: tuple[int, ...] = (1, 4, 16, 32)
    duration_s: float = 20.0
    requests: int = 1000  # most per level
    warmup: int = 4
    seed: int = 0
    timeout_s: float = 60.0
    malformed: float = 0.0  # share of requests sent malformed (a soak: they must fail alone)
