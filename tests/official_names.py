"""Parameter names and shapes of the official FoundationVision checkpoints, written out from
the structure of the official code (models/var.py, basic_var.py, vqvae.py, basic_vae.py,
quant.py): VAR with attn_l2_norm=True, shared_aln=False (d16..d30) or True (d36: one
``shared_ada_lin = Sequential(SiLU, SharedAdaLin(D, 6C))`` and a (1, 1, 6, C) ``ada_gss`` per
block instead of each block's ``ada_lin``); VQVAE ch=160, ch_mult (1,1,2,2,4), 2 res blocks,
attention at the lowest resolution, 4 shared phi convs. Released files and their settings
(README, demo_sample.ipynb, utils/arg_util.py): ``var_d{16,20,24,30}.pth`` at 256 px,
``var_d36.pth`` at 512 px (``--pn 512``, ``--saln 1``), ``vae_ch160v4096z32.pth`` for both.
Independent of sasq's module code on purpose.
"""

from __future__ import annotations

RELEASED_VAR = {
    16: ("var_d16.pth", (1, 2, 3, 4, 5, 6, 8, 10, 13, 16), False),
    20: ("var_d20.pth", (1, 2, 3, 4, 5, 6, 8, 10, 13, 16), False),
    24: ("var_d24.pth", (1, 2, 3, 4, 5, 6, 8, 10, 13, 16), False),
    30: ("var_d30.pth", (1, 2, 3, 4, 5, 6, 8, 10, 13, 16), False),
    36: ("var_d36.pth", (1, 2, 3, 4, 6, 9, 13, 18, 24, 32), True),
}
RELEASED_VAE = "vae_ch160v4096z32.pth"
# The official README's FID recipe: autoregressive_infer_cfg(cfg=1.5, top_p=0.96, top_k=900)
OFFICIAL_CFG, OFFICIAL_TOP_K, OFFICIAL_TOP_P = 1.5, 900, 0.96


def var_keys(
    depth: int,
    V: int = 4096,
    Cvae: int = 32,
    num_classes: int = 1000,
    patch_nums=(1, 2, 3, 4, 5, 6, 8, 10, 13, 16),
    shared_aln: bool = False,
) -> dict[str, tuple[int, ...]]:
    C, H = 64 * depth, depth
    L = sum(p * p for p in patch_nums)
    keys = {
        "word_embed.weight": (C, Cvae),
        "word_embed.bias": (C,),
        "class_emb.weight": (num_classes + 1, C),
        "pos_start": (1, patch_nums[0] ** 2, C),
        "pos_1LC": (1, L, C),
        "lvl_embed.weight": (len(patch_nums), C),
        "lvl_1L": (1, L),
        "attn_bias_for_masking": (1, 1, L, L),
        "head_nm.ada_lin.1.weight": (2 * C, C),
        "head_nm.ada_lin.1.bias": (2 * C,),
        "head.weight": (V, C),
        "head.bias": (V,),
    }
    if shared_aln:
        keys |= {"shared_ada_lin.1.weight": (6 * C, C), "shared_ada_lin.1.bias": (6 * C,)}
    for i in range(depth):
        b = f"blocks.{i}."
        keys |= {
            b + "attn.scale_mul_1H11": (1, H, 1, 1),
            b + "attn.q_bias": (C,),
            b + "attn.v_bias": (C,),
            b + "attn.zero_k_bias": (C,),
            b + "attn.mat_qkv.weight": (3 * C, C),
            b + "attn.proj.weight": (C, C),
            b + "attn.proj.bias": (C,),
            b + "ffn.fc1.weight": (4 * C, C),
            b + "ffn.fc1.bias": (4 * C,),
            b + "ffn.fc2.weight": (C, 4 * C),
            b + "ffn.fc2.bias": (C,),
        }
        if shared_aln:
            keys[b + "ada_gss"] = (1, 1, 6, C)
        else:
            keys |= {b + "ada_lin.1.weight": (6 * C, C), b + "ada_lin.1.bias": (6 * C,)}
    return keys


def _conv(prefix: str, cout: int, cin: int, k: int) -> dict[str, tuple[int, ...]]:
    return {prefix + ".weight": (cout, cin, k, k), prefix + ".bias": (cout,)}


def _gn(prefix: str, c: int) -> dict[str, tuple[int, ...]]:
    return {prefix + ".weight": (c,), prefix + ".bias": (c,)}


def _res(prefix: str, cin: int, cout: int) -> dict[str, tuple[int, ...]]:
    d = _gn(prefix + ".norm1", cin) | _conv(prefix + ".conv1", cout, cin, 3)
    d |= _gn(prefix + ".norm2", cout) | _conv(prefix + ".conv2", cout, cout, 3)
    if cin != cout:
        d |= _conv(prefix + ".nin_shortcut", cout, cin, 1)
    return d


def _attn(prefix: str, c: int) -> dict[str, tuple[int, ...]]:
    return (
        _gn(prefix + ".norm", c)
        | _conv(prefix + ".qkv", 3 * c, c, 1)
        | _conv(prefix + ".proj_out", c, c, 1)
    )


def vqvae_keys(
    ch: int = 160,
    V: int = 4096,
    z: int = 32,
    ch_mult=(1, 1, 2, 2, 4),
    n_scales: int = 10,
    in_ch: int = 3,
) -> dict[str, tuple[int, ...]]:
    keys: dict[str, tuple[int, ...]] = {}
    nres = len(ch_mult)
    # encoder: 2 res blocks per level, attention after each block at the last level
    keys |= _conv("encoder.conv_in", ch, in_ch, 3)
    cin = ch
    for lvl, m in enumerate(ch_mult):
        cout = ch * m
        for b in range(2):
            keys |= _res(f"encoder.down.{lvl}.block.{b}", cin, cout)
            cin = cout
            if lvl == nres - 1:
                keys |= _attn(f"encoder.down.{lvl}.attn.{b}", cin)
        if lvl != nres - 1:
            keys |= _conv(f"encoder.down.{lvl}.downsample.conv", cin, cin, 3)
    top = ch * ch_mult[-1]
    for part in ("encoder", "decoder"):
        keys |= _res(f"{part}.mid.block_1", top, top) | _attn(f"{part}.mid.attn_1", top)
        keys |= _res(f"{part}.mid.block_2", top, top)
    keys |= _gn("encoder.norm_out", top) | _conv("encoder.conv_out", z, top, 3)
    # decoder: 3 res blocks per level, walked from the lowest resolution up
    keys |= _conv("decoder.conv_in", top, z, 3)
    cin = top
    for lvl in reversed(range(nres)):
        cout = ch * ch_mult[lvl]
        for b in range(3):
            keys |= _res(f"decoder.up.{lvl}.block.{b}", cin, cout)
            cin = cout
            if lvl == nres - 1:
                keys |= _attn(f"decoder.up.{lvl}.attn.{b}", cin)
        if lvl != 0:
            keys |= _conv(f"decoder.up.{lvl}.upsample.conv", cin, cin, 3)
    keys |= _gn("decoder.norm_out", ch) | _conv("decoder.conv_out", in_ch, ch, 3)
    keys |= {"quantize.ema_vocab_hit_SV": (n_scales, V), "quantize.embedding.weight": (V, z)}
    for k in range(4):
        keys |= _conv(f"quantize.quant_resi.qresi_ls.{k}", z, z, 3)
    keys |= _conv("quant_conv", z, z, 3) | _conv("post_quant_conv", z, z, 3)
    return keys
