"""The attention form of each scale for ``--target tensorrt``: TensorRT fuses MatMul ->
Softmax -> MatMul into one kernel only within limits that depend on the BMMs' type (the
rules are data, ``trt_attention.json``, with their sources). INT8 needs head size 16, 32 or
64 and S_q, S_kv <= 512; VAR's last scale attends over 680 keys at 256 px (2240 at 512 px),
where int8 BMMs would run unfused. There the attention products read the dequantized int8
cache in fp16 instead, from a second step graph (``step_long``) with the same inputs,
outputs and int8 cache; the manifest names the graph of every scale. FP8 (``--precision
fp8``) fuses up to 3072 keys with head size <= 64 on Ada (TensorRT 10.6), so one graph
serves VAR up to 512 px. S_kv counts the shift-and-sum copies' extra key columns too.

    forms = scale_forms(head_dim=64, patch_nums=(1, 2, ..., 16), extra_keys=[0] * 10)
    [f.graph for f in forms]  # ['step', ..., 'step', 'step_long']
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from enum import Enum
from functools import cache
from pathlib import Path

LONG_GRAPH = "step_long"


class AttnForm(str, Enum):
    INT8 = "int8"
    FP8 = "fp8"
    FP16 = "fp16"


@dataclass(frozen=True)
class AttentionRules:
    int8_head_sizes: tuple[int, ...]
    int8_max_seq: int
    fp8_head_max: int
    fp8_max_seq: int
    fp16_head_min: int
    fp16_head_max: int
    fp16_head_multiple: int

    @classmethod
    @cache
    def load(cls) -> AttentionRules:
        d = json.loads(Path(__file__).with_name("trt_attention.json").read_text())["forms"]
        i8, f8, f16 = d["int8"], d["fp8"], d["fp16"]
        return cls(
            int8_head_sizes=tuple(i8["head_sizes"]),
            int8_max_seq=i8["max_seq"],
            fp8_head_max=f8["head_size_max"],
            fp8_max_seq=f8["max_seq"],
            fp16_head_min=f16["head_size_min"],
            fp16_head_max=f16["head_size_max"],
            fp16_head_multiple=f16["head_size_multiple"],
        )

    def why_not(self, form: AttnForm, head: int, s_q: int, s_kv: int) -> str | None:
        """Why TensorRT would not fuse attention of this form and size, or None."""
        s = max(s_q, s_kv)
        if form == AttnForm.INT8:
            if head not in self.int8_head_sizes:
                return f"int8 fused attention needs head size in {self.int8_head_sizes}, got {head}"
            if s > self.int8_max_seq:
                return f"int8 fused attention needs S_q, S_kv <= {self.int8_max_seq}, S_kv is {s}"
        elif form == AttnForm.FP8:
            if head > self.fp8_head_max or s > self.fp8_max_seq:
                return (f"fp8 fused attention needs head size <= {self.fp8_head_max} and "
                        f"S <= {self.fp8_max_seq}, got {head} and {s}")  # fmt: skip
        elif not (self.fp16_head_min <= head <= self.fp16_head_max
                  and head % self.fp16_head_multiple == 0):  # fmt: skip
            return f"fp16 fused attention needs head size 16..256, a multiple of 8, got {head}"
        return None


@dataclass(frozen=True)
class ScaleForm:
    si: int
    s_q: int
    s_kv: int
    form: AttnForm
    graph: str
    reason: str

    def to_dict(self) -> dict:
        return {**asdict(self), "form": self.form.value}


def scale_forms(
    head_dim: int,
    patch_nums: Sequence[int],
    extra_keys: Sequence[int],
    fp8: bool = False,
    rules: AttentionRules | None = None,
) -> list[ScaleForm]:
    """The form of every scale: the quantized BMMs (int8, or fp8) in ``step`` where TensorRT
    fuses them, else fp16 in ``step_long``."""
    rules = rules or AttentionRules.load()
    quantized = AttnForm.FP8 if fp8 else AttnForm.INT8
    out, past = [], 0
    for si, pn in enumerate(patch_nums):
        s_q = pn * pn
        s_kv = past + s_q + int(extra_keys[si])
        past += s_q
        why = rules.why_not(quantized, head_dim, s_q, s_kv)
        if why is None:
            out.append(ScaleForm(si, s_q, s_kv, quantized, "step", f"{quantized.value} fuses"))
            continue
        fp16_why = rules.why_not(AttnForm.FP16, head_dim, s_q, s_kv)
        reason = why + ("; fp16 fuses" if fp16_why is None else f"; and {fp16_why}")
        out.append(ScaleForm(si, s_q, s_kv, AttnForm.FP16, LONG_GRAPH, reason))
    return out
