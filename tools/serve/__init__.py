"""Serving: ``sasq serve`` on Triton Inference Server through pytriton (``server``: batching,
per-request seeds, SIGTERM drains then exits), a model repository for a stock tritonserver
(``triton_repo``) and ``sasq loadtest`` (``loadtest``). May import ``report``."""

__all__ = ["config", "loadtest", "server", "triton_repo"]
