"""ONNX export: graphs pass the checker, attention stays MatMul -> Softmax -> MatMul, every
graph matches torch (zero-length past included), external data works, and a tampered or
incomplete folder is refused.

``tiny_model`` and ``exported`` are shared with test_ort_backend.py / test_bench.py, so the
suite exports each configuration once (an export of the tiny model takes ~10 s)."""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from conftest import random_tiny

import sasq.models as M
from sasq.errors import UserError
from sasq.exporter import (
    ExportConfig,
    attention_chains,
    export_model,
    load_manifest,
    step_io_names,
    verify,
)
from sasq.exporter import export as export_mod

CONFIGS = {
    "inline": ExportConfig(),
    # Static batch of 8 images and every weight in external data, in one export; without
    # the more_smooth graphs, as an export written before they existed.
    "external": ExportConfig(
        dynamic_batch=False, batch_size=8, external_data_threshold=0, more_smooth=False
    ),
}
_EXPORTS: dict[str, Path] = {}


@functools.cache
def tiny_model() -> M.LoadedModel:
    return random_tiny()


def exported(tmp_path_factory: pytest.TempPathFactory, kind: str = "inline") -> Path:
    """The tiny model exported with CONFIGS[kind], once per test session."""
    if kind not in _EXPORTS:
        out = tmp_path_factory.mktemp(kind) / "onnx"
        export_model(tiny_model(), out, CONFIGS[kind])
        _EXPORTS[kind] = out
    return _EXPORTS[kind]


def session(path: Path) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory):
    return exported(tmp_path_factory, "inline")


@pytest.fixture
def copy_dir(onnx_dir, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(onnx_dir, dst)
    return dst


def test_every_graph_passes_the_full_checker_with_standard_ops_only(onnx_dir):
    man = load_manifest(onnx_dir)
    SN = len(man.patch_nums)
    names = {"start", "step", "decoder"} | {f"next_{si}" for si in range(SN)}
    assert set(man.graphs) == names | {f"next_soft_{si}" for si in range(SN)}
    assert [s.next_soft_graph for s in man.scales] == [f"next_soft_{si}.onnx" for si in range(SN)]
    for g in man.graphs.values():
        model = onnx.load(str(onnx_dir / g.file))
        onnx.checker.check_model(model, full_check=True)
        assert {o.domain for o in model.opset_import} <= {"", "ai.onnx"}
        assert {o.version for o in model.opset_import if o.domain in ("", "ai.onnx")} == {20}
        assert all(n.domain in ("", "ai.onnx") for n in model.graph.node)
        assert g.external_data is None


def test_step_graph_has_one_explicit_attention_chain_per_layer(onnx_dir):
    model = onnx.load(str(onnx_dir / "step.onnx"))
    ops = {n.op_type for n in model.graph.node}
    assert not ops & {"Attention", "MultiHeadAttention", "ScaledDotProductAttention"}
    assert len(attention_chains(model)) == tiny_model().var.depth
    # folded Linear weights keep their parameter's name, stored [K, N] for MatMul
    weights = {i.name: tuple(i.dims) for i in model.graph.initializer}
    assert weights["var.blocks.0.attn.mat_qkv.weight.T"] == (128, 384)
    assert weights["var.head.weight.T"] == (128, 512)


def test_manifest_describes_shapes_names_versions_and_hashes(onnx_dir):
    man = verify(onnx_dir)
    m = tiny_model()
    assert man.patch_nums == (1, 2, 3, 4) and man.opset == 20 and man.dynamic_batch
    assert [(s.l, s.past_len) for s in man.scales] == [(1, 0), (4, 1), (9, 5), (16, 14)]
    assert M.ModelConfig.from_dict(man.model_config) == m.cfg
    assert {"sasq", "torch", "onnx", "onnxruntime"} <= set(man.versions)
    assert set(man.files) == {p.name for p in onnx_dir.iterdir() if p.name != "manifest.json"}
    step = man.graphs["step"]
    ins, outs = step_io_names(m.var.depth)
    assert [t.name for t in step.inputs] == ins and [t.name for t in step.outputs] == outs
    assert step.inputs[0].shape == ("B2", "l", 128)
    assert step.inputs[2].shape == ("B2", 4, "P", 32)
    assert step.outputs[0].shape == ("B2", "l", 512)
    # the manifest on disk is exactly what export_model returned
    assert json.loads((onnx_dir / "manifest.json").read_text()) == json.loads(
        json.dumps(man.to_dict())
    )


def test_step_accepts_zero_length_past_and_matches_torch(onnx_dir):
    m = tiny_model()
    sess = session(onnx_dir / "step.onnx")
    ins, _ = step_io_names(m.var.depth)
    cond = m.var.class_cond(torch.tensor([1, 2, 10, 10]))
    x = m.var.first_input(cond)
    zeros = np.zeros((4, 4, 0, 32), np.float32)
    mod = m.var.modulation(cond)
    feeds = {"x_BlC": x.detach().numpy(), "mod_BMC": mod.detach().numpy()}
    feeds |= {n: zeros for n in ins[2:]}
    out = sess.run(None, feeds)
    with torch.no_grad():
        logits, kv = m.var.decode_step(x, mod, None)
    ref = [logits, *(t for k_v in kv for t in k_v)]
    assert out[1].shape == (4, 4, 1, 32)
    assert max(np.abs(o - r.numpy()).max() for o, r in zip(out, ref, strict=True)) < 1e-5


def test_start_and_transition_graphs_match_torch(onnx_dir):
    m, q = tiny_model(), tiny_model().vqvae.quantize
    labels = torch.tensor([0, 3, 9, 10, 10, 10])
    mod, x = session(onnx_dir / "start.onnx").run(None, {"label_2B": labels.numpy()})
    with torch.no_grad():
        ref_cond = m.var.class_cond(labels)
        assert np.abs(mod - m.var.modulation(ref_cond).numpy()).max() < 1e-5
        assert np.abs(x - m.var.first_input(ref_cond).numpy()).max() < 1e-6
    g = torch.Generator().manual_seed(0)
    f_hat = torch.zeros(3, 32, 4, 4)
    for si, pn in enumerate(m.var.patch_nums):
        idx = torch.randint(0, q.vocab_size, (3, pn * pn), generator=g)
        soft = (torch.randn(3, pn * pn, q.vocab_size, generator=g) * 3).softmax(-1)
        (soft_f_hat, *_) = session(onnx_dir / f"next_soft_{si}.onnx").run(
            None, {"soft_BlV": soft.numpy(), "f_hat": f_hat.numpy()}
        )
        out = session(onnx_dir / f"next_{si}.onnx").run(
            None, {"idx_Bl": idx.numpy(), "f_hat": f_hat.numpy()}
        )
        with torch.no_grad():
            soft_ref = q.add_embedding(si, f_hat, soft @ q.embedding.weight)
            assert np.abs(soft_f_hat - soft_ref.numpy()).max() < 1e-5
            assert (soft_ref - f_hat).abs().max() > 1e-2  # the soft mix did enter f_hat
            f_hat = q.add_scale(si, None if si == 0 else f_hat, idx)
            assert np.abs(out[0] - f_hat.numpy()).max() < 1e-5
            if si < q.SN - 1:
                x_ref = m.var.embed_input(si + 1, q.next_input(si, f_hat)).repeat(2, 1, 1)
                assert np.abs(out[1] - x_ref.numpy()).max() < 1e-5
            else:
                assert len(out) == 1
    (img,) = session(onnx_dir / "decoder.onnx").run(None, {"f_hat": f_hat.numpy()})
    with torch.no_grad():
        assert np.abs(img - m.vqvae.fhat_to_img(f_hat).numpy()).max() < 1e-5


@pytest.mark.slow  # 58s on a busy 2-core machine
def test_external_data_export_puts_every_weight_beside_its_graph(tmp_path_factory):
    d = exported(tmp_path_factory, "external")
    man = verify(d)
    assert not man.dynamic_batch and man.batch_size == 8
    assert all(s.next_soft_graph is None for s in man.scales)
    assert not any(name.startswith("next_soft") for name in man.graphs)
    for g in man.graphs.values():
        assert g.external_data == f"{g.file}.data" and (d / g.external_data).is_file()
        assert g.external_data in man.files
        proto = onnx.load(str(d / g.file), load_external_data=False)
        assert all(
            i.data_location == onnx.TensorProto.EXTERNAL
            for i in proto.graph.initializer
            if i.dims and np.prod(i.dims) * 4 > 256
        )
        onnx.checker.check_model(str(d / g.file), full_check=True)
    assert man.graphs["step"].inputs[0].shape == (16, "l", 128)
    assert len(attention_chains(d / "step.onnx")) == tiny_model().var.depth


def test_tampered_file_is_refused(copy_dir):
    p = copy_dir / "step.onnx"
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0x01
    p.write_bytes(bytes(data))
    with pytest.raises(UserError, match="step.onnx: sha256 does not match"):
        verify(copy_dir)


def test_manifest_without_more_smooth_graphs_reads_and_foreign_names_are_refused(copy_dir):
    path = copy_dir / "manifest.json"
    d = json.loads(path.read_text())
    for s in d["scales"]:
        del s["next_soft_graph"]  # a manifest written before the more_smooth graphs
    path.write_text(json.dumps(d))
    assert [s.next_soft_graph for s in verify(copy_dir).scales] == [None] * 4
    d["files"]["../outside.onnx"] = d["files"]["step.onnx"]
    path.write_text(json.dumps(d))
    with pytest.raises(UserError, match="'../outside.onnx' is not a plain file name inside"):
        verify(copy_dir)


def test_missing_file_or_manifest_is_refused(copy_dir):
    (copy_dir / "next_1.onnx").unlink()
    with pytest.raises(UserError, match="next_1.onnx: missing"):
        verify(copy_dir)
    (copy_dir / "manifest.json").unlink()
    with pytest.raises(UserError, match="no manifest.json"):
        verify(copy_dir)


def test_failed_export_leaves_nothing_and_foreign_folders_are_refused(tmp_path, monkeypatch):
    calls = []

    def fail_second(g, path, cfg, phase=None):
        calls.append(g.name)
        if len(calls) == 2:
            raise RuntimeError("boom")
        path.write_bytes(b"partial")

    monkeypatch.setattr(export_mod, "_export_graph", fail_second)
    with pytest.raises(RuntimeError, match="boom"):
        export_model(tiny_model(), tmp_path / "out")
    assert list(tmp_path.iterdir()) == []

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match="not a sasq export"):
        export_model(tiny_model(), tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
