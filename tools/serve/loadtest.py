"""``sasq loadtest URL``: latency percentiles and images/s of a ``sasq serve`` server per
concurrency level, with tritonclient (HTTP), to JSON, markdown and a PNG plot.

Each level runs ``concurrency`` client threads, each with its own connection, sending
one-image requests (class 0, seeds counting up) back to back until ``requests`` were sent or
``duration`` seconds passed, whichever comes first; a request slower than ``timeout`` counts
as failed. Every loop is bounded in count and in time. Loopback URLs only: this measures a
server on this machine, it is not a tool to load someone else's.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from dataclasses import asdict
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from sasq.errors import UserError
from sasq.tools.serve.config import LoadConfig
from sasq.tools.serve.server import INPUTS, MODEL_NAME, SERVE_MISSING

_WIRE_TYPES = {np.int64: "INT64", np.float32: "FP32"}  # the inputs' types on the wire


def _client_module():
    try:
        import tritonclient.http as th
    except ImportError:
        raise UserError(SERVE_MISSING) from None
    return th


def loopback_hostport(url: str) -> str:
    """``host:port`` of a loopback http URL; ``UserError`` for anything else."""
    u = urlparse(url if "://" in url else f"http://{url}")
    if u.scheme != "http" or not u.hostname or u.port is None:
        raise UserError(f"{url}: expected http://HOST:PORT of a sasq serve server")
    try:
        addrs = {ai[4][0] for ai in socket.getaddrinfo(u.hostname, u.port)}
    except socket.gaierror:
        raise UserError(f"{url}: cannot resolve {u.hostname}") from None
    if not all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addrs):
        raise UserError(f"{url}: loadtest measures a server on this machine; use a loopback URL")
    return f"{u.hostname}:{u.port}"


def infer_rows(client, labels, seeds, cfg=None, top_k=None, top_p=None, timeout_s=None):
    """One request of len(labels) images: (uint8 images (B, H, W, 3), per-scale tokens).
    Raises ``RuntimeError`` with the server's message when the request or a row failed."""
    th = _client_module()
    B = len(labels)
    inputs = []
    given = {"class_label": labels, "seed": seeds, "cfg": cfg, "top_k": top_k, "top_p": top_p}
    for name, dtype, _ in INPUTS:
        values = given[name]
        if values is None:
            continue
        t = th.InferInput(name, [B, 1], _WIRE_TYPES[dtype])
        t.set_data_from_numpy(np.asarray(values, dtype=dtype).reshape(B, 1))
        inputs.append(t)
    kw = {} if timeout_s is None else {"timeout": int(timeout_s * 1e6)}  # server-side, us
    result = client.infer(MODEL_NAME, inputs, **kw)
    errors = [e.decode() for e in result.as_numpy("error").reshape(-1) if e]
    if errors:
        raise RuntimeError("; ".join(errors))
    names = sorted(
        (o["name"] for o in result.get_response()["outputs"] if o["name"].startswith("tokens_")),
        key=lambda n: int(n.split("_")[1]),
    )
    return result.as_numpy("image"), [result.as_numpy(n) for n in names]


def _is_malformed(i: int, share: float) -> bool:
    """Request i is sent malformed: evenly spread, ``share`` of them in all."""
    return int((i + 1) * share) > int(i * share)


def send_malformed(th, client, i: int) -> None:
    """A bad request: an unknown class, or (every other one) class labels as FP32."""
    if i % 2:
        t = th.InferInput("class_label", [1, 1], "FP32")
        t.set_data_from_numpy(np.zeros((1, 1), np.float32))
        client.infer(MODEL_NAME, [t])
    else:
        infer_rows(client, [2**40], [i])


def _level(th, hostport: str, lc: LoadConfig, concurrency: int, seed0: int) -> dict:
    """One concurrency level: latencies of the successful requests, failures, images/s."""
    lock = threading.Lock()
    sent = [0]
    bad = {"sent": 0, "rejected": 0, "accepted": 0}
    latencies: list[float] = []
    failures: list[str] = []
    deadline = time.perf_counter() + lc.duration_s

    def worker() -> None:
        client = th.InferenceServerClient(
            hostport, connection_timeout=lc.timeout_s, network_timeout=lc.timeout_s
        )
        try:
            while time.perf_counter() < deadline:
                with lock:
                    if sent[0] >= lc.requests:
                        return
                    i = sent[0]
                    sent[0] += 1
                if _is_malformed(i, lc.malformed):
                    try:
                        send_malformed(th, client, i)
                        outcome = "accepted"  # should not happen
                    except Exception:
                        outcome = "rejected"
                    with lock:
                        bad["sent"] += 1
                        bad[outcome] += 1
                    continue
                t0 = time.perf_counter()
                try:
                    infer_rows(client, [0], [seed0 + i])
                except Exception as e:  # a failed request is a measurement, not a crash
                    with lock:
                        failures.append(" ".join(str(e).split())[:200])
                    continue
                with lock:
                    latencies.append(time.perf_counter() - t0)
        finally:
            client.close()

    t_start = time.perf_counter()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:  # each request is bounded by timeout_s, each loop by the deadline
        t.join(timeout=lc.duration_s + lc.timeout_s + 5)
    seconds = time.perf_counter() - t_start
    ms = np.array(latencies) * 1e3
    pct = (
        {f"p{q}_ms": round(float(np.percentile(ms, q)), 2) for q in (50, 95, 99)}
        if len(ms)
        else {"p50_ms": None, "p95_ms": None, "p99_ms": None}
    )
    return {
        "concurrency": concurrency,
        "requests": sent[0] - bad["sent"],
        "ok": len(latencies),
        "failed": len(failures),
        "seconds": round(seconds, 3),
        "images_per_s": round(len(latencies) / seconds, 2) if seconds > 0 else None,
        **pct,
        "mean_ms": round(float(ms.mean()), 2) if len(ms) else None,
        "first_failures": failures[:3],
        "malformed": bad,
    }


def _server_info(client) -> dict:
    cfg = client.get_model_config(MODEL_NAME)
    groups = cfg.get("instance_group", [])
    return {
        "model": MODEL_NAME,
        "max_batch_size": cfg.get("max_batch_size"),
        "instances": sum(int(g.get("count", 1)) for g in groups) or None,
        "max_queue_delay_us": cfg.get("dynamic_batching", {}).get("max_queue_delay_microseconds"),
    }


def run_loadtest(lc: LoadConfig) -> dict:
    """Every concurrency level in turn against the server at ``lc.url``."""
    th = _client_module()
    hostport = loopback_hostport(lc.url)
    client = th.InferenceServerClient(hostport, connection_timeout=10, network_timeout=lc.timeout_s)
    try:
        try:
            ready = client.is_server_ready() and client.is_model_ready(MODEL_NAME)
        except Exception as e:  # connection refused and the like
            raise UserError(f"{lc.url}: no server answers ({' '.join(str(e).split())})") from None
        if not ready:
            raise UserError(f"{lc.url}: the server or its model '{MODEL_NAME}' is not ready")
        info = _server_info(client)
        levels, seed = [], lc.seed
        for c in lc.concurrency:
            for w in range(lc.warmup):
                try:
                    infer_rows(client, [0], [seed + w])
                except Exception as e:  # the server cannot answer a plain request
                    why = " ".join(str(e).split())[:300]
                    raise UserError(f"{lc.url}: a warm-up request failed: {why}") from None
            levels.append(_level(th, hostport, lc, c, seed))
            seed += lc.requests
    finally:
        client.close()
    return {"url": lc.url, "config": asdict(lc), "server": info, "levels": levels}


def to_markdown(r: dict) -> str:
    s = r["server"]
    lines = [
        f"# sasq loadtest: {r['url']}",
        "",
        f"Model '{s['model']}': {s['instances']} instance(s), max batch {s['max_batch_size']}, "
        f"queue delay {s['max_queue_delay_us']} us; {r['config']['duration_s']} s or "
        f"{r['config']['requests']} requests per level, one image per request.",
        "",
        "| concurrency | requests | failed | images/s | p50 ms | p95 ms | p99 ms |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for lv in r["levels"]:
        lines.append(
            f"| {lv['concurrency']} | {lv['requests']} | {lv['failed']} | {lv['images_per_s']} "
            f"| {lv['p50_ms']} | {lv['p95_ms']} | {lv['p99_ms']} |"
        )
    bad = [lv["malformed"] for lv in r["levels"]]
    if any(b["sent"] for b in bad):
        lines += [
            "",
            f"Malformed requests (share {r['config']['malformed']}): "
            f"{sum(b['sent'] for b in bad)} sent, {sum(b['rejected'] for b in bad)} rejected, "
            f"{sum(b['accepted'] for b in bad)} answered as if valid.",
        ]
    return "\n".join([*lines, ""])


def plot(r: dict, path: Path) -> Path:
    """images/s and latency percentiles against concurrency."""
    from sasq.tools.report.plots import pyplot, save_png

    plt = pyplot()
    lv = r["levels"]
    c = [x["concurrency"] for x in lv]
    fig, (a, b) = plt.subplots(1, 2, figsize=(8.4, 3.4))
    a.plot(c, [x["images_per_s"] or 0 for x in lv], marker="o")
    a.set_xlabel("concurrency")
    a.set_title("images/s")
    for q in ("p50_ms", "p95_ms", "p99_ms"):
        b.plot(c, [x[q] if x[q] is not None else np.nan for x in lv], marker="o", label=q[:3])
    b.set_xlabel("concurrency")
    b.set_title("latency (ms)")
    b.legend(fontsize=7)
    for ax in (a, b):
        ax.set_xscale("log", base=2)
    fig.suptitle(
        f"{r['server']['instances']} instance(s), max batch {r['server']['max_batch_size']}"
    )
    return save_png(fig, path)


def write_report(r: dict, out_dir: Path) -> tuple[Path, Path, Path]:
    from sasq.tools.report.json_md import write_report as write_json_md

    j, m = write_json_md(r, out_dir, "loadtest", to_markdown)
    return j, m, plot(r, Path(out_dir) / "loadtest.png")
