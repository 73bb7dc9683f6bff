"""The ONNX Runtime backend reproduces the torch backend through the whole decoding loop:
same tokens, logits and images within 1e-4, for both state-keeping modes and for the
static-batch external-data export; sessions refuse providers the build lacks."""

from __future__ import annotations

import onnxruntime as ort
import pytest
import torch
from test_export import exported, tiny_model

from sasq.engines.decode import Generation, generate
from sasq.engines.ort_backend import OrtBackend
from sasq.engines.ort_session import SessionConfig, make_session
from sasq.engines.torch_backend import TorchBackend
from sasq.errors import UserError

LABELS = (0, 1, 2, 3, 4, 5, 6, 7)
CPU1 = SessionConfig(intra_op_threads=1)


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory):
    return exported(tmp_path_factory, "inline")


def _gen(backend, seed=0, labels=LABELS) -> Generation:
    m = tiny_model()
    return generate(
        backend,
        torch.tensor(labels),
        m.var.patch_nums,
        m.cfg.sampling,
        seed,
        m.var.num_classes,
        keep_logits=True,
    )


@pytest.fixture(scope="module")
def reference() -> Generation:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _gen(TorchBackend(tiny_model()))
    finally:
        torch.set_num_threads(threads)


def _assert_matches(ref: Generation, got: Generation) -> dict[str, float]:
    for si, (a, b) in enumerate(zip(ref.idx, got.idx, strict=True)):
        assert torch.equal(a, b), f"tokens differ at scale {si}"
    logit_err = max((a - b).abs().max().item() for a, b in zip(ref.logits, got.logits, strict=True))
    img_err = (ref.img - got.img).abs().max().item()
    assert logit_err <= 1e-4 and img_err <= 1e-4, (logit_err, img_err)
    return {"logits": logit_err, "image": img_err}


def test_reference_is_a_meaningful_comparison(reference):
    assert all(lg.abs().max() > 1.0 for lg in reference.logits)
    assert len({tuple(t.tolist()) for t in reference.idx[-1]}) == len(LABELS)
    assert reference.img.std() > 0.01


@pytest.mark.parametrize("io_binding", [True, False])
def test_ort_equals_torch_at_every_scale(onnx_dir, reference, io_binding):
    backend = OrtBackend(onnx_dir, CPU1, io_binding=io_binding)
    assert backend.name == "ort"
    _assert_matches(reference, _gen(backend))
    # the backend is reusable: a second batch starts from an empty cache
    _assert_matches(reference, _gen(backend))


def test_static_batch_external_data_export_gives_the_same_generation(
    tmp_path_factory, onnx_dir, reference
):
    d = exported(tmp_path_factory, "external")
    ext = _gen(OrtBackend(d, CPU1))
    _assert_matches(reference, ext)
    inline = _gen(OrtBackend(onnx_dir, CPU1))
    # Same weights, same kernels: the static external-data graphs give bit-identical results.
    assert all(torch.equal(a, b) for a, b in zip(inline.logits, ext.logits, strict=True))
    assert torch.equal(inline.img, ext.img)
    with pytest.raises(UserError, match="exported for batch 8"):
        _gen(OrtBackend(d, CPU1), labels=(0, 1))


def test_backend_verifies_the_folder_on_open(onnx_dir, tmp_path):
    import shutil

    d = tmp_path / "copy"
    shutil.copytree(onnx_dir, d)
    p = d / "decoder.onnx"
    p.write_bytes(p.read_bytes()[:-1] + bytes([p.read_bytes()[-1] ^ 0xFF]))
    with pytest.raises(UserError, match="decoder.onnx: sha256"):
        OrtBackend(d, CPU1)


@pytest.mark.parametrize("provider", ["cuda", "tensorrt"])
def test_missing_gpu_provider_is_one_clear_user_error(onnx_dir, provider):
    name = {"cuda": "CUDA", "tensorrt": "Tensorrt"}[provider]
    if f"{name}ExecutionProvider" in ort.get_available_providers():
        pytest.skip(f"{name} execution provider present")
    with pytest.raises(UserError, match="execution provider is not available") as e:
        make_session(onnx_dir / "start.onnx", SessionConfig(provider=provider))
    assert "\n" not in str(e.value) and "sasq[gpu]" in str(e.value)


def test_session_config_options_reach_onnxruntime(onnx_dir, tmp_path):
    with pytest.raises(UserError):
        SessionConfig(provider="tpu")
    cfg = SessionConfig(
        intra_op_threads=1,
        graph_optimization="basic",
        disabled_optimizers=("MatMulAddFusion",),
        enable_profiling=True,
        profile_prefix=str(tmp_path / "prof"),
        priority_order=True,
    )
    sess = make_session(onnx_dir / "start.onnx", cfg)
    sess.run(None, {"label_2B": torch.tensor([1, 10]).numpy()})
    assert sess.get_providers() == ["CPUExecutionProvider"]
    assert sess.get_session_options().intra_op_num_threads == 1
    assert sess.get_session_options().execution_order == ort.ExecutionOrder.PRIORITY_BASED
    profile = sess.end_profiling()
    assert profile and list(tmp_path.glob("prof*.json"))


def test_intra_op_workers_do_not_spin_unless_asked(onnx_dir):
    """The loop's dozen sessions each have a pool; spinning workers of one took the cores
    from the next (ort_session.SessionConfig.allow_spinning)."""
    entry = "session.intra_op.allow_spinning"
    quiet = make_session(onnx_dir / "start.onnx", SessionConfig(intra_op_threads=2))
    assert quiet.get_session_options().get_session_config_entry(entry) == "0"
    spin = make_session(onnx_dir / "start.onnx", SessionConfig(allow_spinning=True))
    assert spin.get_session_options().get_session_config_entry(entry) == "1"
    backend = OrtBackend(onnx_dir, CPU1)
    assert backend.step_session.get_session_options().get_session_config_entry(entry) == "0"
