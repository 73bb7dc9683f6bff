"""The attention form per scale for --target tensorrt (exporter/attention_form.py), the
manifest's step_graph, and the second step graph (step_long) under ONNX Runtime."""

from __future__ import annotations

import copy
import dataclasses
import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

from sasq.engines.backends import make_backend
from sasq.engines.decode import generate
from sasq.engines.lint import config_for_export, lint
from sasq.engines.ort_backend import empty_cache
from sasq.errors import UserError
from sasq.exporter.attention_form import AttentionRules, AttnForm, scale_forms
from sasq.exporter.manifest import load_manifest, verify
from sasq.exporter.manifest_schema import validate_manifest
from sasq.exporter.qdq_config import QuantConfig
from sasq.exporter.quantize import quantize
from sasq.models import ModelConfig

PN_256 = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)  # VAR at 256 px: the last scale sees 680 keys
PN_512 = (1, 2, 3, 4, 6, 9, 13, 18, 24, 32)  # 512 px: 2240


def test_var_256_int8_fuses_up_to_424_keys_and_runs_the_680_key_scale_in_fp16():
    forms = scale_forms(64, PN_256, [0] * 10)
    assert [f.s_kv for f in forms][-2:] == [424, 680]
    assert [f.form for f in forms] == [AttnForm.INT8] * 9 + [AttnForm.FP16]
    assert [f.graph for f in forms] == ["step"] * 9 + ["step_long"]
    assert "S_kv is 680" in forms[-1].reason and "fp16 fuses" in forms[-1].reason


def test_var_512_long_scales_and_fp8_fuses_all_of_them():
    forms = scale_forms(64, PN_512, [0] * 10)
    assert [f.s_kv for f in forms][-1] == 2240
    assert [f.form.value for f in forms].count("fp16") == 3  # 580, 1156, 2240 keys
    assert {f.form for f in scale_forms(64, PN_512, [0] * 10, fp8=True)} == {AttnForm.FP8}
    # head size 128: neither int8 (16/32/64) nor fp8 (<= 64) fuses
    assert {f.form for f in scale_forms(128, (1, 2), [0, 0], fp8=True)} == {AttnForm.FP16}


def test_shift_sum_copies_count_as_keys():
    # 424 keys + 100 copies > 512: the copies are keys of the fused AV product
    extra = [0] * 8 + [100, 0]
    assert scale_forms(64, PN_256, extra)[8].form == AttnForm.FP16


def test_embedded_models_keep_one_graph():
    for pns in ((1, 2, 3, 4), (1, 2, 3, 4, 5, 6, 8)):
        assert {f.graph for f in scale_forms(32, pns, [0] * len(pns))} == {"step"}


def test_rules_are_data_with_their_sources():
    from pathlib import Path

    import sasq.exporter.attention_form as af

    d = json.loads((Path(af.__file__).with_name("trt_attention.json")).read_text())
    assert d["forms"]["int8"] == {"head_sizes": [16, 32, 64], "max_seq": 512}
    assert all(s["url"].startswith("https://") for s in d["sources"].values())


def _two_graph_export(default_export, default_calib, tmp_path, **cfg):
    # the default model's last scale sees 30 keys; int8 limited to 14 puts it in step_long
    rules = dataclasses.replace(AttentionRules.load(), int8_max_seq=14)
    q = QuantConfig(target="tensorrt", **cfg)
    return quantize(default_export, default_calib, q, tmp_path / "q", rules)


def test_manifest_names_the_graph_of_every_scale_and_checks_it(
    default_export, default_calib, tmp_path
):
    out = _two_graph_export(default_export, default_calib, tmp_path)
    m = verify(out)
    assert [s.step_graph for s in m.scales] == ["step", "step", "step", "step_long"]
    assert m.graphs["step_long"].inputs == m.graphs["step"].inputs
    quant = m.extra["quant"]
    assert [f["form"] for f in quant["attention_forms"]] == ["int8"] * 3 + ["fp16"]
    for key in ("step", "step_long"):  # both graphs pass the lint, TensorRT 10 and 11
        kept = {**quant["kept_float"], **quant["step_graphs"]["step_long"]["kept_float"]}
        for v in ("10", "11"):
            cfg = config_for_export({**quant, "kept_float": kept}, trt_version=v)
            assert lint(out / m.graphs[key].file, cfg) == []
    d = json.loads((out / "manifest.json").read_text())
    for bad, why in (("decoder", "differ from graphs.step"), ("nope", "not a key of graphs"),
                     (3, "not a key of graphs")):  # fmt: skip
        e = copy.deepcopy(d)
        e["scales"][1]["step_graph"] = bad
        with pytest.raises(UserError, match=why):
            validate_manifest(e, "m.json")
    del d["scales"][3]["step_graph"]  # a manifest written before the key: "step"
    validate_manifest(d, "m.json")


def _manual_logits(folder, labels_2B, idx):
    """The decode with raw ORT sessions, each scale on the graph its manifest entry names,
    the cache carried from graph to graph, teacher-forced with ``idx``."""
    m = load_manifest(folder)

    def sess(f):
        return ort.InferenceSession(str(folder / f), providers=["CPUExecutionProvider"])

    steps = {k: sess(m.graphs[k].file) for k in {s.step_graph for s in m.scales}}
    mod, x = sess(m.graphs["start"].file).run(["mod_BMC", "x_BlC"], {"label_2B": labels_2B})
    rows = len(labels_2B)
    past = [empty_cache(c, rows) for c in m.step_cache()]
    d = m.dims
    f_hat = np.zeros((rows // 2, d["Cvae"], d["latent_hw"], d["latent_hw"]), np.float32)
    names = ["x_BlC", "mod_BMC", *(c.input for c in m.step_cache())]
    out = []
    for si, s in enumerate(m.scales):
        logits, *past = steps[s.step_graph].run(None, dict(zip(names, [x, mod, *past],
                                                               strict=True)))  # fmt: skip
        out.append(logits)
        res = sess(s.next_graph).run(None, {"idx_Bl": idx[si].numpy(), "f_hat": f_hat})
        f_hat, x = res[0], (res[1] if len(res) > 1 else None)
    return out


def test_ort_backend_runs_each_scale_on_its_graph(default_export, default_calib, tmp_path):
    out = _two_graph_export(default_export, default_calib, tmp_path, rest="fp16")
    m = verify(out)
    labels = torch.arange(4)
    K = m.model_config["var"]["num_classes"]
    cfg = ModelConfig.from_dict(m.model_config)
    g = generate(make_backend("ort", None, out), labels, m.patch_nums, cfg.sampling, 0, K,
                 keep_logits=True)  # fmt: skip
    labels_2B = np.concatenate([labels.numpy(), np.full(4, K)]).astype(np.int64)
    want = _manual_logits(out, labels_2B, g.idx)
    for si, (a, b) in enumerate(zip(g.logits, want, strict=True)):
        np.testing.assert_allclose(a.numpy(), b, rtol=1e-5, atol=1e-5, err_msg=f"scale {si}")
