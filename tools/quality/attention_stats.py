"""``sasq attention``: how much of the attention a few key tokens draw, per layer and scale.

Shift-and-sum pays where a few key tokens draw much of the attention: their values are
multiplied by large probabilities, so their rounding error dominates the AV product. This
measures that condition on a model's own rollouts (PyTorch FP, the real decoding loop):
for every query row, the share of its attention mass on its top 1% and top 5% of keys
(at least one key), averaged over rows, heads and images, per layer and scale step. A
uniform attention row would put k / S of its mass there; the table gives that floor too.
"""

from __future__ import annotations

import math
from dataclasses import asdict

import numpy as np
import torch

from sasq.models import LoadedModel
from sasq.tools.quality.config import AttentionConfig
from sasq.tools.report import json_md

TOPS = (0.01, 0.05)


class _Accumulator:
    """Sum of top-k mass shares and the row count, per (layer, scale step)."""

    def __init__(self, depth: int, scales: int):
        self.share = np.zeros((len(TOPS), depth, scales))
        self.rows = np.zeros((depth, scales))
        self.keys = np.zeros(scales, dtype=np.int64)
        self.step = 0

    def observer(self, layer: int):
        def observe(p_BHLS: torch.Tensor) -> None:
            S = p_BHLS.shape[-1]
            self.keys[self.step] = S
            flat = p_BHLS.reshape(-1, S).double()
            top = flat.sort(dim=-1, descending=True).values.cumsum(-1)
            for t, frac in enumerate(TOPS):
                k = max(1, math.ceil(frac * S))
                self.share[t, layer, self.step] += float(top[:, k - 1].sum())
            self.rows[layer, self.step] += flat.shape[0]

        return observe


class _Tagged:
    """The torch backend, telling the accumulator which scale step the blocks are in."""

    def __init__(self, inner, acc: _Accumulator):
        self.inner, self.acc, self.name = inner, acc, inner.name

    def reset(self, label_2B: torch.Tensor) -> None:
        self.inner.reset(label_2B)

    def step(self, si: int) -> torch.Tensor:
        self.acc.step = si
        return self.inner.step(si)

    def advance(self, si: int, idx_Bl: torch.Tensor, soft_BlV: torch.Tensor | None = None) -> None:
        self.inner.advance(si, idx_Bl, soft_BlV)

    def image(self) -> torch.Tensor:
        return self.inner.image()


def attention_concentration(model: LoadedModel, ac: AttentionConfig) -> dict:
    from sasq.engines.backends import make_backend
    from sasq.engines.config import GenerateConfig
    from sasq.engines.generate import generate_many

    var, pns = model.var, model.cfg.var.patch_nums
    acc = _Accumulator(var.depth, len(pns))
    backend = _Tagged(make_backend("torch", model), acc)
    attns = [b.attn for b in var.blocks]
    for i, a in enumerate(attns):
        a.probs_observer = acc.observer(i)
    try:
        K = var.num_classes
        labels = tuple(i % K for i in range(ac.images))
        generate_many(model.cfg, backend, GenerateConfig(labels, ac.seed, ac.batch))
    finally:
        for a in attns:
            a.probs_observer = None
    share = acc.share / np.maximum(acc.rows, 1)
    keys = acc.keys.tolist()
    return {
        "config": asdict(ac),
        "model": str(model.path),
        "patch_nums": list(pns),
        "keys": keys,  # keys seen by the queries of each scale step (cache + new tokens)
        "top": {
            f"{int(100 * frac)}%": {
                "per_layer_scale": np.round(share[t], 4).tolist(),
                "mean_over_layers": np.round(share[t].mean(0), 4).tolist(),
                "uniform": [round(max(1, math.ceil(frac * S)) / S, 4) for S in keys],
            }
            for t, frac in enumerate(TOPS)
        },
    }


def to_markdown(r: dict) -> str:
    lines = [
        f"# sasq attention ({r['model']}, {r['config']['images']} images)",
        "",
        "Share of each query row's attention mass on its top keys, mean over rows, heads,",
        "images and layers; 'uniform' is the share a uniform row would give.",
        "",
        "| scale | keys | " + " | ".join(f"top {k} | uniform {k}" for k in r["top"]) + " |",
        "|---|---|" + "---|---|" * len(r["top"]),
    ]
    for si, S in enumerate(r["keys"]):
        vals = []
        for v in r["top"].values():
            vals += [f"{v['mean_over_layers'][si]:.3f}", f"{v['uniform'][si]:.3f}"]
        lines.append(f"| {si} | {S} | " + " | ".join(vals) + " |")
    last = len(r["keys"]) - 1
    lines += ["", f"Per layer at the last scale ({r['keys'][last]} keys):", ""]
    lines += ["| layer | " + " | ".join(f"top {k}" for k in r["top"]) + " |"]
    lines += ["|---|" + "---|" * len(r["top"])]
    depth = len(next(iter(r["top"].values()))["per_layer_scale"])
    for layer in range(depth):
        vals = [f"{v['per_layer_scale'][layer][last]:.3f}" for v in r["top"].values()]
        lines.append(f"| {layer} | " + " | ".join(vals) + " |")
    return "\n".join([*lines, ""])


def write_report(r: dict, out_dir) -> tuple:
    return json_md.write_report(r, out_dir, "attention", to_markdown)
