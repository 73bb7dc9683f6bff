"""PTQ4ARVG's gain-projected scaling (GPS), folded into the AdaLN linears.

The linears fed by an AdaLN-modulated LayerNorm (each block's qkv and fc1, and the head)
see activations with a few channels far larger than the rest. Dividing input channel i by
s_i and multiplying the linear's weight column i by s_i leaves the FP output unchanged; the
division is free at run time because the modulated LayerNorm is ``LN(x) * (1 + scale) +
shift`` with ``scale`` and ``shift`` rows of the AdaLN linear, which absorb it.

How large s_i should be comes from the quantization loss of one linear (activations per
tensor, weights per output channel) expanded to second order with independent errors:

    L_i(s) = b_i s^2 / s0^2 + a_i s0^2 / s^2
    a_i = ||x_i||^2 ||dW_i||^2    weight error, seen through the channel's activations
    b_i = ||dx_i||^2 ||W^q_i||^2  activation error, seen through the quantized weights

dx and dW are the errors of quantizing without scaling, and s0 is the SmoothQuant scale
(alpha = 0.5) of the channel with the largest range, which sets both quantization steps.
dL/ds = 0 gives s_i^4 = s0^4 a_i / b_i: the gain of shrinking a channel's activation error
projected through the weights against the cost in weight error. The anchor s0 and the
formula follow the authors' code; the two clamps below are ours and keep its assumption
true (the anchor stays the channel that sets the activation step) and the weights finite.

GPS changes the FP weights, so it runs before export: ``sasq export --gps`` writes an FP
export that calibrates and quantizes like any other.

Shared AdaLN (VAR-d36): a block's rows are ``shared_ada_lin(c) + ada_gss``, and the shared
linear's scale/shift rows feed the same input (qkv or fc1) of every block. Dividing them by
s is exact only when every block uses the same s; ``ada_gss`` then absorbs the constant 1.
Per-layer scales differ, so those layers are skipped with the reason in the summary; the
head has its own AdaLN linear and folds as usual.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch

from sasq import progress
from sasq.calib.config import GPSConfig
from sasq.calib.resample import ResampleHook
from sasq.engines.paper_quant import fake_quant, per_channel_weight
from sasq.errors import UserError
from sasq.models import LoadedModel
from sasq.quant.settings import ResampleMode

RATIO_CLAMP = 1e8  # a_i / b_i within [1/RATIO_CLAMP, RATIO_CLAMP]: s within s0 * [0.01, 100]


@dataclass
class ChannelStats:
    """Per-channel |x| maximum over every token, and a uniform sample of token rows."""

    keep: float  # probability that a token row is kept in the sample
    generator: torch.Generator
    absmax: torch.Tensor | None = None
    rows: list[torch.Tensor] = field(default_factory=list)

    def update(self, x: torch.Tensor) -> None:
        x = x.detach().reshape(-1, x.shape[-1]).float()
        amax = x.abs().amax(0)
        self.absmax = amax if self.absmax is None else torch.maximum(self.absmax, amax)
        pick = torch.rand(x.shape[0], generator=self.generator) < self.keep
        self.rows.append(x[pick].clone())

    def sample(self) -> torch.Tensor:
        return torch.cat(self.rows)


def gps_scales(
    absmax_x: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    w_bits: int,
    a_bits: int,
    alpha: float = 0.5,
) -> torch.Tensor:
    """Per-input-channel scales s (C_in,) for ``y = x @ weight.T``: divide x by s, multiply
    weight columns by s. ``absmax_x`` over all tokens, ``x`` (N, C_in) a token sample."""
    w = weight.detach().double()
    x, absmax_x = x.double(), absmax_x.double().clamp_min(1e-12)
    absmax_w = w.abs().amax(0).clamp_min(1e-12)  # per input channel
    anchor = int(absmax_x.argmax())
    s0 = absmax_x[anchor] ** alpha / absmax_w[anchor] ** (1 - alpha)
    dx = x - fake_quant(x, absmax_x[anchor], a_bits)  # the per-tensor step before scaling
    dw = w - per_channel_weight(w, w_bits)
    a = x.square().sum(0) * dw.square().sum(0)
    b = dx.square().sum(0) * (w - dw).square().sum(0)
    ratio = torch.where(b > 0, a / b.clamp_min(1e-300), torch.ones_like(a))
    ratio = torch.where(a > 0, ratio, torch.ones_like(a))  # nothing to gain: stay at s0
    s = s0 * ratio.clamp(1 / RATIO_CLAMP, RATIO_CLAMP) ** 0.25
    # No channel may outgrow the anchor after scaling, or the anchor no longer sets the step.
    s = torch.maximum(s, absmax_x * s0 / absmax_x[anchor])
    s[anchor] = s0
    return s.float()


def output_sqnr(
    x: torch.Tensor, weight: torch.Tensor, s: torch.Tensor, w_bits: int, a_bits: int
) -> float:
    """SQNR (dB) of ``x @ weight.T`` with x / s quantized per tensor and weight * s per
    output channel, against FP: what the scales buy on the sample they were computed on."""
    x, w, s = x.double(), weight.detach().double(), s.double()
    xs, ws = x / s, w * s
    y = x @ w.T
    err = y - fake_quant(xs, xs.abs().max(), a_bits) @ per_channel_weight(ws, w_bits).T
    return float(10 * torch.log10(y.square().sum() / err.square().sum().clamp_min(1e-300)))


def gps_targets(model: LoadedModel):
    """(name, module whose first input is the linear's input, weight, AdaLN linear, the
    ``scale`` and ``shift`` row offsets in it, and with shared AdaLN the block's ``ada_gss``
    (else None)) for every GPS target."""
    var = model.var
    C = var.C
    for i, blk in enumerate(var.blocks):
        ada = var.shared_ada_lin[1] if blk.shared_aln else blk.ada_lin[1]
        gss = blk.ada_gss if blk.shared_aln else None
        qkv, fc1 = blk.attn.mat_qkv.weight, blk.ffn.fc1.weight
        yield f"blocks.{i}.attn.mat_qkv", blk.attn, qkv, ada, 2 * C, 4 * C, gss
        yield f"blocks.{i}.ffn.fc1", blk.ffn, fc1, ada, 3 * C, 5 * C, gss
    yield "head", var.head, var.head.weight, var.head_nm.ada_lin[1], 0, C, None


def shared_groups(model: LoadedModel) -> dict[int, list[str]]:
    """Shared AdaLN: the targets whose scale rows are the same rows of the shared linear,
    by row offset (qkv of every block, fc1 of every block); empty without shared AdaLN."""
    groups: dict[int, list[str]] = {}
    for name, _m, _w, _ada, scale_at, _shift_at, gss in gps_targets(model):
        if gss is not None:
            groups.setdefault(scale_at, []).append(name)
    return groups


@torch.no_grad()
def collect_stats(model: LoadedModel, cfg: GPSConfig) -> dict[str, ChannelStats]:
    """Roll out the FP model over ``cfg.num_samples`` images (classes cycled, resampled like
    calibration) and gather the input statistics of every GPS target."""
    from sasq.engines.decode import generate
    from sasq.engines.torch_backend import TorchBackend

    if cfg.num_samples < 1:
        raise UserError(
            f"`GPSConfig.num_samples` must be at least 1, got {cfg.num_samples}",
            param="GPSConfig.num_samples",
        )
    mc = model.cfg
    tokens = 2 * cfg.num_samples * sum(p * p for p in mc.vqvae.patch_nums)
    keep = min(1.0, cfg.max_tokens / tokens)
    stats, handles = {}, []
    for k, (name, module, *_) in enumerate(gps_targets(model)):
        gen = torch.Generator().manual_seed(cfg.seed * 7919 + k)
        stats[name] = st = ChannelStats(keep, gen)
        handles.append(module.register_forward_pre_hook(lambda _m, args, st=st: st.update(args[0])))
    try:
        K = mc.var.num_classes
        labels = torch.tensor([i % K for i in range(cfg.num_samples)])
        hook = ResampleHook(mc.sampling, cfg.resample, seed=cfg.seed)
        backend = TorchBackend(model)
        chunks = labels.split(cfg.batch)
        for i, chunk in enumerate(progress.bar(chunks, "gps", enabled=cfg.progress)):
            generate(
                backend, chunk, tuple(mc.vqvae.patch_nums), mc.sampling, cfg.seed + i, K, hook=hook
            )
    finally:
        for h in handles:
            h.remove()
    return stats


@torch.no_grad()
def fold_scales(model: LoadedModel, scales: dict[str, torch.Tensor]) -> LoadedModel:
    """A copy of ``model`` with each target's input divided by its scales (through the AdaLN
    rows) and its weight columns multiplied by them: the same function in exact arithmetic.

    ``LN(x) * (1 + scale) + shift`` divided by s: the ``scale`` rows become
    ``(W c + b + 1) / s - 1`` (weight W / s, bias (b + 1) / s - 1) and the ``shift`` rows
    ``(W c + b) / s``; the model's constant 1 stays as it is. With shared AdaLN the shared
    rows are divided once (W / s, b / s) and each block's ``ada_gss`` rows take the rest,
    ((g + 1) / s - 1 and g / s), which needs one s for every block of a group."""
    for names in shared_groups(model).values():
        if any(not torch.equal(scales[n], scales[names[0]]) for n in names):
            raise ValueError(f"shared AdaLN: {', '.join(names)} need equal scales to fold")
    out = copy.deepcopy(model)
    folded_shared: set[int] = set()
    for name, _module, weight, ada, scale_at, shift_at, gss in gps_targets(out):
        s = scales[name].to(weight.dtype)
        C = s.numel()
        weight.mul_(s)
        if gss is not None:
            gss[0, 0, scale_at // C].add_(1).div_(s).sub_(1)
            gss[0, 0, shift_at // C].div_(s)
            if scale_at in folded_shared:
                continue
            folded_shared.add(scale_at)
        ws, bs = ada.weight[scale_at : scale_at + C], ada.bias[scale_at : scale_at + C]
        ws.div_(s[:, None])
        if gss is None:
            bs.add_(1).div_(s).sub_(1)
        else:  # the block's ada_gss holds the constant
            bs.div_(s)
        ada.weight[shift_at : shift_at + C].div_(s[:, None])
        ada.bias[shift_at : shift_at + C].div_(s)
    return out


def apply_gps(model: LoadedModel, cfg: GPSConfig) -> tuple[LoadedModel, dict]:
    """Collect statistics, compute the scales and fold them: (new model, summary)."""
    stats = collect_stats(model, cfg)
    scales, layers, tokens = {}, {}, 0
    for name, _module, weight, *_ in gps_targets(model):
        st = stats[name]
        x = st.sample()
        tokens = tokens or x.shape[0]  # reported: the first layer's sample
        s = gps_scales(st.absmax, x, weight, cfg.w_bits, cfg.a_bits, cfg.alpha)
        # The loss model holds each weight row's step fixed; where scaled columns take over
        # the row maxima (low weight bits) it can be wrong, so a layer keeps GPS only where
        # its output SQNR on the sample improves.
        before = output_sqnr(x, weight, torch.ones_like(s), cfg.w_bits, cfg.a_bits)
        after = output_sqnr(x, weight, s, cfg.w_bits, cfg.a_bits)
        applied = after > before
        scales[name] = s if applied else torch.ones_like(s)
        layers[name] = {
            "applied": applied,
            "sqnr_db_before": round(before, 2),
            "sqnr_db_gps": round(after, 2),
            "s_min": round(float(s.min()), 5),
            "s_median": round(float(s.median()), 5),
            "s_max": round(float(s.max()), 5),
            "anchor_channel": int(st.absmax.argmax()),
            "range_ratio_before": round(_range_ratio(st.absmax), 2),
            "range_ratio_after": round(_range_ratio(st.absmax / s), 2),
        }
    _skip_unshareable(model, scales, layers)
    summary = {
        "w_bits": cfg.w_bits,
        "a_bits": cfg.a_bits,
        "num_samples": cfg.num_samples,
        "resample": ResampleMode(cfg.resample).value,
        "seed": cfg.seed,
        "tokens_per_layer": int(tokens),
        "applied": sum(v["applied"] for v in layers.values()),
        "layers": layers,
    }
    return fold_scales(model, scales), summary


def _skip_unshareable(model: LoadedModel, scales: dict, layers: dict) -> None:
    """Shared AdaLN: a group whose layers chose different scales cannot fold exactly; its
    layers keep s = 1 and say why."""
    depth = model.var.depth
    for names in shared_groups(model).values():
        if all(torch.equal(scales[n], scales[names[0]]) for n in names):
            continue  # one scale for every block (e.g. depth 1, or none applied): exact
        for n in names:
            if layers[n]["applied"]:
                layers[n]["applied"] = False
                layers[n]["skipped"] = (
                    f"shared AdaLN: the scale/shift rows of this input come from "
                    f"shared_ada_lin, which feeds the same input of all {depth} blocks; a "
                    f"per-layer scale would change the other blocks (exact only if all agree)"
                )
            scales[n] = torch.ones_like(scales[n])


def _range_ratio(absmax: torch.Tensor) -> float:
    """max / median of per-channel ranges: how much one channel dominates the tensor step."""
    med = float(absmax.median())
    return float(absmax.max()) / med if med > 0 else float("nan")
