"""sasq serve / sasq loadtest: a Triton server of the default export on a free loopback port.

The tests that start a server are marked ``serve`` and skipped with the reason when the
``sasq[serve]`` extra (nvidia-pytriton, tritonclient) is not installed; together they take
about a minute on two cores (one server start, ~6 s, shared by the module).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch

from sasq.errors import UserError

HAVE_SERVE = all(importlib.util.find_spec(m) for m in ("pytriton", "tritonclient"))
# a mark, not only a skip in the server fixture: pytest makes the session's export first
needs_serve = pytest.mark.skipif(
    not HAVE_SERVE, reason="needs the serve extra: pip install 'sasq[serve]'"
)


def _rows(cfg):
    """Rows of varied label, seed and sampling (every knob a request can turn)."""
    from sasq.engines.decode import Row

    base = cfg.sampling
    samplings = [
        base,
        dataclasses.replace(base, cfg=3.0, top_k=20),
        dataclasses.replace(base, cfg=0.5, top_p=0.8),
        dataclasses.replace(base, cfg=0.0, top_k=5, top_p=0.9),
    ]
    K = cfg.var.num_classes
    return [Row((3 * i) % K, 1000 + 7 * i, samplings[i % len(samplings)]) for i in range(10)]


def _alone(cfg, backend, row):
    """What ``sasq generate --class C --n 1 --seed S`` computes for the row."""
    from sasq.engines.config import GenerateConfig
    from sasq.engines.generate import generate_many

    return generate_many(cfg, backend, GenerateConfig((row.label,), row.seed, 1, row.sampling))


@pytest.fixture(scope="module")
def model_cfg(default_export):
    from sasq.exporter import verify
    from sasq.models import ModelConfig

    return ModelConfig.from_dict(verify(default_export).model_config)


def test_rows_in_one_batch_equal_each_row_alone(default_export, model_cfg):
    """The premise of batching requests: a row's tokens and image do not depend on the rows
    batched beside it (ONNX Runtime CPU logits are row-independent, bitwise). Not so with
    more_smooth (the soft latent's GEMM rounds by batch size): the server decodes those rows
    one by one."""
    from sasq.engines.backends import make_backend
    from sasq.engines.decode import generate_rows

    backend = make_backend("ort", None, default_export, 1)
    rows = _rows(model_cfg)
    pns, K = tuple(model_cfg.var.patch_nums), model_cfg.var.num_classes
    gen = generate_rows(backend, rows, pns, K)
    for b, row in enumerate(rows):
        ref = _alone(model_cfg, backend, row)
        for si in range(len(pns)):
            assert torch.equal(gen.idx[si][b : b + 1], ref.idx[si]), (b, si)
        assert torch.equal(gen.img[b : b + 1], ref.img), b


def test_loadtest_refuses_a_remote_url():
    from sasq.tools.serve.loadtest import loopback_hostport

    assert loopback_hostport("http://127.0.0.1:8000") == "127.0.0.1:8000"
    with pytest.raises(UserError, match="loopback"):
        loopback_hostport("http://192.0.2.1:8000")
    with pytest.raises(UserError, match="HOST:PORT"):
        loopback_hostport("ftp://127.0.0.1")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal where no GPU is")
def test_gpu_backends_refused_in_one_line(default_export, capsys):
    from sasq.tools.cli import main

    for backend in ("ort-cuda", "ort-trt", "trt"):
        assert main(["serve", "--onnx", str(default_export), "--backend", backend]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and "no CUDA GPU" in err, err


@pytest.fixture(scope="module")
def server(request):
    from sasq.tools.serve.config import ServeConfig
    from sasq.tools.serve.server import Server

    default_export = request.getfixturevalue("default_export")

    # A long queue delay makes the dynamic batcher group the concurrent requests below.
    sc = ServeConfig(
        default_export, port=0, max_batch=8, max_queue_delay_ms=200, threads=1, exit_timeout_s=5
    )
    with Server(sc) as s:
        yield s


def _client(server):
    import tritonclient.http as th

    return th.InferenceServerClient(server.url.removeprefix("http://"), network_timeout=60)


@pytest.mark.serve
@needs_serve
def test_served_rows_equal_sasq_generate(server, default_export, model_cfg, tmp_path, capsys):
    from sasq.engines.backends import make_backend
    from sasq.tools.cli import main
    from sasq.tools.serve.loadtest import infer_rows
    from sasq.tools.serve.server import to_uint8_hwc

    rows = _rows(model_cfg)
    got: dict[int, tuple] = {}

    def send(b: int) -> None:  # one request per row, all at once: Triton batches them
        r = rows[b]
        client = _client(server)
        try:
            got[b] = infer_rows(
                client,
                [r.label],
                [r.seed],
                [r.sampling.cfg],
                [r.sampling.top_k],
                [r.sampling.top_p],
            )
        finally:
            client.close()

    threads = [threading.Thread(target=send, args=(b,)) for b in range(len(rows))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(got) == list(range(len(rows)))

    backend = make_backend("ort", None, default_export, 1)
    for b, row in enumerate(rows):
        ref = _alone(model_cfg, backend, row)
        image, tokens = got[b]
        assert np.array_equal(image, to_uint8_hwc(ref.img)), b
        for si, t in enumerate(tokens):
            assert np.array_equal(t, ref.idx[si].numpy()), (b, si)

    # ... and against the command itself, for one row
    row = rows[1]
    npz = tmp_path / "t.npz"
    args = ["generate", "--backend", "ort", "--onnx", str(default_export), "--n", "1"]
    args += ["--class", str(row.label), "--seed", str(row.seed), "--cfg", str(row.sampling.cfg)]
    args += ["--top-k", str(row.sampling.top_k), "--out", str(tmp_path / "g.png")]
    assert main([*args, "--save-tokens", str(npz)]) == 0
    capsys.readouterr()
    saved = np.load(npz)
    for si, t in enumerate(got[1][1]):
        assert np.array_equal(t, saved[f"scale{si}"])

    # the dynamic batcher did group them: fewer executions than inferences (Triton's metrics)
    counts = _metrics(server)
    assert counts["nv_inference_exec_count"] < counts["nv_inference_count"], counts


def _metrics(server) -> dict[str, float]:
    """The sasq model's counters on Triton's Prometheus endpoint."""
    import urllib.request

    with urllib.request.urlopen(server.metrics_url, timeout=10) as r:
        text = r.read().decode()
    return {
        line.split("{")[0]: float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("nv_inference") and 'model="sasq"' in line
    }


@pytest.mark.serve
@needs_serve
def test_malformed_requests_get_errors_and_the_server_keeps_serving(server):
    import tritonclient.http as th
    from tritonclient.utils import InferenceServerException

    from sasq.tools.serve.loadtest import infer_rows

    client = _client(server)
    try:

        def raw(name, array, triton_type):
            t = th.InferInput(name, list(array.shape), triton_type)
            t.set_data_from_numpy(array)
            return client.infer("sasq", [t])

        with pytest.raises(InferenceServerException):  # wrong dtype
            raw("class_label", np.ones((1, 1), np.float32), "FP32")
        with pytest.raises(InferenceServerException):  # wrong shape
            raw("class_label", np.ones((1, 2), np.int64), "INT64")
        with pytest.raises(InferenceServerException):  # batch above --max-batch
            raw("class_label", np.ones((9, 1), np.int64), "INT64")
        with pytest.raises(InferenceServerException, match="not a class"):  # alone: an error
            infer_rows(client, [99], [0])
        with pytest.raises((InferenceServerException, RuntimeError), match="top_k"):
            infer_rows(client, [1], [0], top_k=[10**6])

        # bad and good requests at once: the good ones all succeed
        results: dict[int, object] = {}

        def send(i: int) -> None:
            c = _client(server)
            try:
                results[i] = infer_rows(c, [99 if i % 2 else i % 10], [i])
            except Exception as e:
                results[i] = e
            finally:
                c.close()

        threads = [threading.Thread(target=send, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        for i, r in results.items():
            if i % 2:
                assert isinstance(r, Exception) and "not a class" in str(r), (i, r)
            else:
                assert isinstance(r, tuple), (i, r)
        assert len(results) == 8
        image, _ = infer_rows(client, [2], [5])
        assert image.dtype == np.uint8 and client.is_server_live() and client.is_server_ready()
    finally:
        client.close()


@pytest.mark.serve
@needs_serve
def test_loadtest_writes_json_markdown_and_plot(server, tmp_path, capsys):
    from sasq.tools.cli import main

    out = tmp_path / "lt"
    args = ["loadtest", server.url, "--concurrency", "1,4", "--duration", "3", "--requests", "12"]
    assert main([*args, "--warmup", "1", "--malformed", "0.25", "--out", str(out)]) == 0
    assert "PASSED" in capsys.readouterr().out
    r = json.loads((out / "loadtest.json").read_text())
    assert [lv["concurrency"] for lv in r["levels"]] == [1, 4]
    for lv in r["levels"]:
        assert lv["failed"] == 0 and 0 < lv["ok"] <= 12 and lv["images_per_s"] > 0
        assert lv["p50_ms"] <= lv["p95_ms"] <= lv["p99_ms"]
        assert lv["malformed"]["accepted"] == 0 and lv["malformed"]["rejected"] > 0
    assert r["server"]["instances"] == 1 and r["server"]["max_batch_size"] == 8
    md = (out / "loadtest.md").read_text()
    assert "| 4 |" in md and "0 answered as if valid" in md
    assert (out / "loadtest.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.serve
@needs_serve
def test_sigterm_lets_the_request_in_flight_finish(default_export):
    """`sasq serve` prints its ready line; on SIGTERM a request still queued completes and
    the command exits 0."""
    import tritonclient.http as th

    from sasq.tools.serve.loadtest import infer_rows

    # a 1.5 s queue delay: the lone request below waits in the batcher when SIGTERM comes
    cmd = [sys.executable, "-m", "sasq", "serve", "--onnx", str(default_export), "--port", "0"]
    cmd += ["--threads", "1", "--max-queue-delay-ms", "1500"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        url, deadline = None, time.monotonic() + 90
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            if line.startswith("sasq serve: ready at "):
                url = line.split()[4]
        assert url, "no ready line"
        result: dict[str, object] = {}

        def send() -> None:
            c = th.InferenceServerClient(url.removeprefix("http://"), network_timeout=60)
            try:
                result["ok"] = infer_rows(c, [1], [7])
            except Exception as e:
                result["err"] = e
            finally:
                c.close()

        t = threading.Thread(target=send)
        t.start()
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        t.join(timeout=60)
        assert "ok" in result, result
        rest, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0
        assert '"stopped": "signal"' in rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.serve
@needs_serve
def test_written_repository_on_a_stock_tritonserver(default_export, model_cfg, tmp_path, capsys):
    """`sasq serve --write-repo` on a plain tritonserver (PyTriton's binary, no PyTriton in
    between): the same rows as generate, and a bad request fails alone even when batched."""
    import tritonclient.http as th

    from sasq.engines.backends import make_backend
    from sasq.tools.cli import main
    from sasq.tools.serve.loadtest import infer_rows
    from sasq.tools.serve.server import free_ports, to_uint8_hwc
    from sasq.tools.serve.triton_repo import bundled_tritonserver

    repo = tmp_path / "repo"
    args = ["serve", "--onnx", str(default_export), "--max-batch", "8"]
    assert main([*args, "--max-queue-delay-ms", "200", "--write-repo", str(repo)]) == 0
    capsys.readouterr()
    ports = free_ports(3)
    argv, env = bundled_tritonserver(repo, tmp_path, ports)
    log = open(tmp_path / "tritonserver.log", "w")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    hostport = f"127.0.0.1:{ports[0]}"
    try:
        client = th.InferenceServerClient(hostport, network_timeout=60)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if client.is_server_ready() and client.is_model_ready("sasq"):
                    break
            except Exception:
                pass
            time.sleep(0.5)
        client.close()
        rows = _rows(model_cfg)[:4]
        results: dict[int, object] = {}

        def send(i: int) -> None:
            c = th.InferenceServerClient(hostport, network_timeout=60)
            try:
                if i < len(rows):
                    r = rows[i]
                    s = r.sampling
                    results[i] = infer_rows(c, [r.label], [r.seed], [s.cfg], [s.top_k], [s.top_p])
                else:
                    results[i] = infer_rows(c, [99], [i])
            except Exception as e:
                results[i] = e
            finally:
                c.close()

        threads = [threading.Thread(target=send, args=(i,)) for i in range(len(rows) + 2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        backend = make_backend("ort", None, default_export, 1)
        for i, row in enumerate(rows):
            image, tokens = results[i]
            ref = _alone(model_cfg, backend, row)
            assert np.array_equal(image, to_uint8_hwc(ref.img)), i
            for si, t in enumerate(tokens):
                assert np.array_equal(t, ref.idx[si].numpy()), (i, si)
        for i in (len(rows), len(rows) + 1):
            assert isinstance(results[i], Exception) and "not a class" in str(results[i])
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
