"""Memory a request will need, estimated from the model's sizes before anything is allocated.

A request that cannot fit is refused in one line with the estimate and what the machine
has, instead of being killed by the kernel minutes later (``bench --batch-sizes 100000``
took a 24 GB machine down) or failing inside torch with a traceback.

Each estimate is the peak of the bytes alive at once, in float32, counting the large
buffers and nothing small; tests/test_memory.py checks each against the peak resident
memory a fresh process measures, on configs with per-block and shared AdaLN:

- building the model: its parameters and buffers, counted exactly (the modules are made on
  the meta device, where nothing is allocated: so shared AdaLN's one linear counts once),
  each allocated once and initialised in place, plus the block-causal mask's bool
  temporary (L x L for the L tokens of all scales). On the meta device itself (``load_model``
  builds there and then adopts the checkpoint's tensors) nothing is allocated: zero.
- generating a batch of B images (R = 2B rows with CFG), at the peak of its two phases:
  the last scale's step, where the previous scale's KV cache is still referenced while
  the full one is built (2 x layers x R x (2L - l) x width), plus the larger of one block's
  attention scores and probabilities (R x heads x l x L, twice) and the logits with the
  host's copies for CFG mixing, filtering and sampling (R x l x vocab, three times; top-p's
  sort adds its values, indices and cumulative sum); then the decode, with the full cache
  still held, through the decoder's widest full-resolution stage (five live tensors of
  B x channels x S x S) and its mid attention (B x (hw)^2, twice). Images kept (a grid,
  earlier batches) come on top.
- calibrating: the larger of opening the recording step session (its weights six times)
  and the rollout (the sessions' weights, a generation, the recorded activations); see
  ``calibration_estimate``.
- exporting: graph by graph, so the weights of the largest graph (the step, or start with
  every per-block AdaLN linear) three times (torch.export, the ONNX IR, serialization),
  the dense resampling matrices of the scale transitions, built in float64 from an
  identity, and the exporter's own working set (EXPORTER_BYTES, measured).

"Available" is the kernel's MemAvailable (free plus reclaimable cache), capped by a
cgroup v2 limit when the process runs under one.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

from sasq.errors import UserError
from sasq.models.config import ModelConfig

F32 = 4
GB = 1e9
# What torch.export + the ONNX translation hold beyond the weights, whatever the model's
# size (measured with torch 2.13 / onnxscript, after a first export loaded their modules:
# 20-30 MB on models of 17 M to 28 M parameters).
EXPORTER_BYTES = 25_000_000
# Graphs whose weights exceed this store them in a file beside the graph: the exporter's
# default (ExportConfig.external_data_threshold; models/ sits below exporter/).
EXTERNAL_DATA_BYTES = 1 << 30


@dataclass(frozen=True)
class Estimate:
    """Bytes by part, so a refusal can say what is large."""

    parts: tuple[tuple[str, int], ...]

    @property
    def total(self) -> int:
        return sum(b for _, b in self.parts)

    def __add__(self, other: Estimate) -> Estimate:
        return Estimate(self.parts + other.parts)

    def describe(self) -> str:
        big = sorted(self.parts, key=lambda p: -p[1])[:3]
        return ", ".join(f"{name} {_gb(b)}" for name, b in big if b)


def _gb(n: float) -> str:
    if n >= 100 * GB:
        return f"{n / GB:,.0f} GB"
    return f"{n / GB:.3g} GB" if n >= 0.1 * GB else f"{n / 1e6:.3g} MB"


def _tokens(cfg: ModelConfig) -> int:
    return sum(pn * pn for pn in cfg.var.patch_nums)


@functools.lru_cache(maxsize=16)
def _counts(cfg: ModelConfig) -> tuple[int, int, int, int]:
    """(VAR parameters, VAR buffer elements, VQVAE parameters, VQVAE buffer elements),
    exactly: the modules are built on the meta device, which allocates nothing."""
    var, vae = _meta_modules(cfg)

    def n(ts) -> int:
        return sum(t.numel() for t in ts)

    return n(var.parameters()), n(var.buffers()), n(vae.parameters()), n(vae.buffers())


def _meta_modules(cfg: ModelConfig):
    import torch

    from sasq.models.var import VAR
    from sasq.models.vqvae import VQVAE

    with torch.device("meta"):
        return VAR(cfg.var, cfg.vqvae), VQVAE(cfg.vqvae)


def _largest_graph(cfg: ModelConfig) -> int:
    """Parameters of the largest graph of an export."""
    return max(_graph_params(cfg).values())


@functools.lru_cache(maxsize=16)
def _graph_params(cfg: ModelConfig) -> dict[str, int]:
    """Parameters of each graph of an export: the step (the blocks without their AdaLN
    linears, and the head), start (class embedding and every AdaLN linear: the modulation
    is computed once per label), the decoder, and the scale transitions."""
    var, vae = _meta_modules(cfg)
    graphs = {"step": 0, "start": 0, "decoder": 0, "next": 0}
    for name, p in var.named_parameters():
        if "ada_lin" in name or name.startswith(("class_emb", "pos_start")):
            graphs["start"] += p.numel()
        elif name.startswith(("blocks.", "head")):
            graphs["step"] += p.numel()
        else:  # word, level and position embeddings
            graphs["next"] += p.numel()
    for name, p in vae.named_parameters():
        if name.startswith(("decoder.", "post_quant_conv.")):
            graphs["decoder"] += p.numel()
        elif name.startswith("quantize."):
            graphs["next"] += p.numel()
    return graphs


def var_params(cfg: ModelConfig) -> int:
    return _counts(cfg)[0]


def vqvae_params(cfg: ModelConfig) -> int:
    return _counts(cfg)[2]


def _on_meta() -> bool:
    import torch

    return torch.get_default_device().type == "meta"


def build_estimate(cfg: ModelConfig) -> Estimate:
    """Building the PyTorch model of ``cfg`` (``sasq.models.build``) on the current default
    device; on the meta device nothing is allocated."""
    if _on_meta():
        return Estimate((("parameters (meta device: none allocated)", 0),))
    pv, bv, pq, bq = _counts(cfg)
    L = _tokens(cfg)
    return Estimate(
        (
            ("parameters", (pv + pq) * F32),
            ("buffers", (bv + bq) * F32),  # the attention mask, L x L, is most of them
            ("attention mask temporaries", L * L),  # the bool comparison it is made from
        )
    )


def _host_logit_bytes(cfg: ModelConfig) -> int:
    """Bytes per (row, token, vocab) entry of one CFG pair that sampling holds besides the
    logits: the mixed logits, the filtered copy, the probabilities and torch.multinomial's
    own buffer (4 x 4), and with top-p the sort's values (4) and indices (8), the softmax
    and cumulative sum (8) and two boolean masks (2)."""
    return 16 + (22 if cfg.sampling.top_p > 0 else 0) + (1 if cfg.sampling.top_k > 0 else 0)


def _decoder_bytes(cfg: ModelConfig, batch: int) -> int:
    """The decoder's peak: its full-resolution stage, whose first block turns the upsampled
    ch * ch_mult[1] channels into ch * ch_mult[0] (five tensors alive: input, normalised,
    activated, convolved, shortcut), and its mid attention over the latent's h x w."""
    q = cfg.vqvae
    S = q.image_size
    widest = q.ch * max(q.ch_mult[:2])
    stage = 5 * batch * widest * S * S * F32
    hw = (S // 2 ** (len(q.ch_mult) - 1)) ** 2
    attn = 2 * batch * hw * hw * F32 if q.using_mid_sa else 0
    return max(stage, attn)


def generation_estimate(cfg: ModelConfig, batch: int, images: int = 0) -> Estimate:
    """One generation of ``batch`` images; ``images`` more decoded images kept (a grid)."""
    v, q = cfg.var, cfg.vqvae
    R, L, l = 2 * batch, _tokens(cfg), v.patch_nums[-1] ** 2
    C, S, V = v.embed_dim, q.image_size, q.vocab_size
    kv = 2 * v.depth * R * L * C * F32
    kv_prev = 2 * v.depth * R * (L - l) * C * F32  # the last step's input cache
    modulation = R * (6 * v.depth + 2) * C * F32  # every AdaLN row, held for the whole batch
    # One block at the last scale: its input, normalised and modulated copies and residual
    # (4 x R l C) beside either the attention (q, k, v and the scores and probabilities) or
    # the MLP (hidden activations before and after GELU, and the output).
    attention = R * l * (2 * v.num_heads * L + 6 * C + 4 * C) * F32
    mlp = R * l * (2 * round(C * v.mlp_ratio) + 2 * C + 4 * C) * F32
    logits = R * l * V * F32 + batch * l * V * _host_logit_bytes(cfg)
    step = kv + kv_prev + max(attention, mlp, logits)
    decode = kv + _decoder_bytes(cfg, batch)
    kept = (batch + images) * q.in_channels * S * S * F32
    if step >= decode:
        transient = (("attention and MLP", max(attention, mlp)), ("logits", logits))
        peak = (("KV cache", kv + kv_prev), max(transient, key=lambda p: p[1]))
    else:
        peak = (("KV cache", kv), ("decoder", decode - kv))
    return Estimate((*peak, ("AdaLN modulation", modulation), ("images", kept)))


def calibration_estimate(
    cfg: ModelConfig, batch: int, external_weights: bool | None = None
) -> Estimate:
    """Calibrating with rollouts of ``batch`` images under ONNX Runtime, at the larger of
    its two peaks. Opening the recording step session: the other graphs' sessions are
    open (their weights once) while the step graph's weights are held six times at once
    (loaded, copied by ``expose``, through shape inference's serialize and parse, then
    serialized for ONNX Runtime, which parses and copies them), or twice when they are
    stored outside the graph (``external_weights``; by default, as the exporter does, above
    1 GiB): the graph is then loaded without them and ONNX Runtime reads them (its copy and
    its pre-packed MatMul weights). The rollout: the step's
    weights twice (ONNX Runtime's copy and its pre-packed MatMul weights), the others once,
    a generation's buffers, and at the last scale the recorded inputs of every quantized
    op of every layer (queries and the layer input of each linear over the new tokens, the
    keys and values over all of them, the MLP's hidden activations), handed to the host."""
    v, g = cfg.var, _graph_params(cfg)
    R, L, l, C = 2 * batch, _tokens(cfg), v.patch_nums[-1] ** 2, v.embed_dim
    step_w = g["step"] * F32
    others = (g["start"] + g["decoder"] + g["next"]) * F32
    per_layer = R * ((5 * l + 2 * L) * C + l * round(C * v.mlp_ratio)) * F32
    recorded = v.depth * per_layer
    rollout = generation_estimate(cfg, batch)
    if external_weights is None:
        external_weights = step_w > EXTERNAL_DATA_BYTES
    opening = (2 if external_weights else 6) * step_w
    if opening >= 2 * step_w + rollout.total + recorded:
        return Estimate((("step graph, opening its session", opening), ("other graphs", others)))
    weights = (("step graph", 2 * step_w), ("other graphs", others))
    return Estimate(weights) + rollout + Estimate((("recorded activations", recorded),))


def export_estimate(cfg: ModelConfig) -> Estimate:
    """``sasq export`` of ``cfg``: weights in three forms plus the resampling matrices."""
    H2 = cfg.var.patch_nums[-1] ** 2
    mats = 0
    for pn in cfg.var.patch_nums[:-1]:
        l = pn * pn
        mats += 8 * l * l + 12 * l * H2  # bicubic: identity in float64, the map in both
        mats += 8 * H2 * H2 + 12 * H2 * l  # area: the H^2 x H^2 identity dominates
    weights = 3 * _largest_graph(cfg) * F32  # graphs are exported one after another
    return Estimate(
        (("weights", weights), ("resampling matrices", mats), ("exporter", EXPORTER_BYTES))
    )


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_available() -> int | None:
    root = Path("/sys/fs/cgroup")
    try:
        limit = (root / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return int(limit) - int((root / "memory.current").read_text().strip())
    except (OSError, ValueError):
        return None


def available_bytes() -> int:
    """Memory this process can still take: MemAvailable, capped by a cgroup limit."""
    found = [b for b in (_meminfo_available(), _cgroup_available()) if b is not None]
    if not found:
        try:
            found = [os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")]
        except (ValueError, OSError, AttributeError):
            return 1 << 62  # unknown: do not refuse on a guess
    return max(0, min(found))


def require_fits(est: Estimate, what: str, hint: str) -> None:
    """``UserError`` when ``est`` exceeds the available memory: the estimate, its largest
    parts, what the machine has, and ``hint`` (what to lower)."""
    need, have = est.total, available_bytes()
    if need > have:
        raise UserError(
            f"{what} needs about {_gb(need)} of memory ({est.describe()}), more than the "
            f"{_gb(have)} available on this machine; {hint}"
        )
