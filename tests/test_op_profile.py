"""sasq profile: ORT's per-op profile of a step graph, split by scale and role."""

from __future__ import annotations

import json

from sasq.exporter.manifest import load_manifest
from sasq.tools.cli import main
from sasq.tools.measure.config import ProfileConfig
from sasq.tools.measure.op_profile import GLUE_ROLES, _role, attention_nodes, profile_export


def test_roles_by_node_name_first_then_by_op():
    av, qk = ["av0"], ["qk0"]
    assert _role("av0_shift_sum", "Sum", av, qk) == "attn-value"  # a shift-and-sum node
    assert _role("qk0", "MatMulIntegerToFloat", av, qk) == "attn-qk"
    assert _role("x_Q", "QuantizeLinear", av, qk) == "q/dq"
    assert _role("fc1", "MatMulIntegerToFloat", av, qk) == "linear"
    ops = ("SkipLayerNormalization", "FastGelu", "Add", "Transpose", "NonZero")
    got = [_role("n", op, av, qk) for op in ops]
    assert got == ["norm", "activation", "elementwise", "layout", "other"]
    ops = [op for ops in GLUE_ROLES.values() for op in ops]
    assert len(ops) == len(set(ops))  # each op in one role


def test_profile_attributes_kernel_time_to_scales_and_roles(default_export):
    r = profile_export(default_export, ProfileConfig(batch=2, threads=1, repeats=3))
    assert r["config"]["repeats"] == 3 and isinstance(r["warnings"], list)
    g = r["generation_ms"]  # the bench's rules: median of repeats with their spread
    assert g["min"] <= g["median"] <= g["max"] and g["spread"] >= 0
    lo, hi = r["step_wall_ms_min"], r["step_wall_ms_max"]
    assert all(a <= m <= b for a, m, b in zip(lo, r["step_wall_ms"], hi, strict=True))
    load = r["loadavg_1min"]["before"]
    assert load is None or load == round(load, 2)
    manifest = load_manifest(default_export)
    av, qk = attention_nodes(default_export, manifest)
    assert len(av) == len(qk) == manifest.dims["depth"]
    SN = len(r["patch_nums"])
    assert len(r["step_wall_ms"]) == SN
    roles = r["by_role_ms"]
    # the glue by kind: a VAR step has norms, softmax/GELU, residual adds, head reshapes
    assert {"attn-qk", "attn-value", "linear", "norm", "activation", "elementwise",
            "layout"} <= set(roles)  # fmt: skip
    assert sum(roles.get("other", [0.0])) <= 0.05 * r["kernel_ms"]  # nearly every op named
    assert all(len(v) == SN for v in roles.values())
    kernel = sum(map(sum, roles.values()))
    assert abs(kernel - r["kernel_ms"]) <= 0.01 * r["kernel_ms"] + 0.01
    # kernels run inside the step runs: never more than the wall time, most of it
    assert 0.3 * sum(r["step_wall_ms"]) <= kernel <= sum(r["step_wall_ms"])
    assert sum(roles["linear"]) > 0 and any(op in r["by_op_ms"] for op in ("MatMul", "Gemm"))


def test_profile_cli_writes_json_and_refuses_a_non_export(default_export, tmp_path, capsys):
    out = tmp_path / "prof"
    assert (
        main(["profile", "--onnx", str(default_export), "--threads", "1", "--out", str(out)]) == 0
    )
    printed = capsys.readouterr()
    assert "| attn-value |" in printed.out and "Median of 5 profiled generations" in printed.out
    assert printed.err.strip().endswith(f"{out / 'profile.md'}")  # the closing "wrote" line
    assert json.loads((out / "profile.json").read_text())["config"]["batch"] == 1
    assert main(["profile", "--onnx", str(tmp_path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "not a sasq ONNX export" in err and "Traceback" not in err
