"""The reference models: official names and shapes, strict loading, VQ round trip."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import random_tiny_shared
from official_names import (
    OFFICIAL_CFG,
    OFFICIAL_TOP_K,
    OFFICIAL_TOP_P,
    RELEASED_VAR,
    var_keys,
    vqvae_keys,
)

from sasq.models import VAR, VQVAE, CheckpointError, load_into, tiny_default
from sasq.models.config import VQVAEConfig, official, official_var


def _shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


@pytest.mark.parametrize("depth", sorted(RELEASED_VAR))
def test_var_has_exactly_the_official_names_and_shapes(depth):
    _, pns, shared = RELEASED_VAR[depth]
    cfg = official(depth)
    with torch.device("meta"):
        var = VAR(cfg.var, cfg.vqvae)
    assert _shapes(var) == var_keys(depth, patch_nums=pns, shared_aln=shared)


@pytest.mark.parametrize("depth", sorted(RELEASED_VAR))
def test_presets_carry_the_released_resolution_and_the_official_sampling(depth):
    _, pns, shared = RELEASED_VAR[depth]
    cfg = official(depth)
    assert cfg.vqvae.patch_nums == cfg.var.patch_nums == pns
    assert cfg.vqvae.image_size == 16 * pns[-1]  # 256 px, or 512 px for d36
    assert cfg.var.shared_aln is shared
    s = cfg.sampling
    assert (s.cfg, s.top_k, s.top_p, s.more_smooth) == (
        OFFICIAL_CFG,
        OFFICIAL_TOP_K,
        OFFICIAL_TOP_P,
        False,
    )


def test_d36_differs_from_an_unshared_d36_by_the_38_and_72_keys_of_shared_adaln():
    ours = var_keys(36, patch_nums=RELEASED_VAR[36][1], shared_aln=True)
    unshared = var_keys(36, patch_nums=RELEASED_VAR[36][1])
    assert len(set(ours) - set(unshared)) == 38 and len(set(unshared) - set(ours)) == 72
    with pytest.raises(ValueError, match="no released VAR of depth 12"):
        official(12)


def test_var_d36_parameter_count_is_2_3b():
    cfg = official(36)
    with torch.device("meta"):
        var = VAR(cfg.var, cfg.vqvae)
    n = sum(p.numel() for p in var.parameters())
    assert 2.34e9 < n < 2.36e9, n  # the official README's "2.3B"


def test_var_d16_parameter_count_is_310m():
    cfg = official(16)
    with torch.device("meta"):
        var = VAR(cfg.var, cfg.vqvae)
    n = sum(p.numel() for p in var.parameters())
    assert 309e6 < n < 311e6, n


def test_vqvae_has_exactly_the_official_names_and_shapes():
    with torch.device("meta"):
        vae = VQVAE(official(16).vqvae)
    assert _shapes(vae) == vqvae_keys()


def _official_format_state(keys: dict[str, tuple[int, ...]], seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, shape in keys.items():
        if k == "lvl_1L":
            continue
        sd[k] = torch.randn(shape, generator=g) * 0.02
    return sd


@pytest.mark.parametrize("shared", [False, True])
def test_official_format_state_dict_loads_strictly(tmp_path, shared):
    # A smaller VAR (d2) of the official structure, saved as a plain .pth like the release.
    depth, pn = 2, (1, 2, 3, 4)
    keys = var_keys(depth, V=64, num_classes=10, patch_nums=pn, shared_aln=shared)
    sd = _official_format_state(keys, 0)
    sd["lvl_1L"] = torch.cat([torch.full((p * p,), i) for i, p in enumerate(pn)]).view(1, -1)
    L = sum(p * p for p in pn)
    lvl = sd["lvl_1L"].view(1, L, 1)
    sd["attn_bias_for_masking"] = torch.where(lvl >= lvl.transpose(1, 2), 0.0, -torch.inf)[None]
    torch.save(sd, tmp_path / "var_d2.pth")
    vcfg = dataclasses.replace(official_var(depth, pn, shared), num_classes=10)
    vae_cfg = VQVAEConfig(vocab_size=64, patch_nums=pn)
    var = VAR(vcfg, vae_cfg)
    load_into(var, tmp_path / "var_d2.pth")
    for k, v in var.state_dict().items():
        assert torch.equal(v, sd[k]), k


@torch.no_grad()
def test_shared_adaln_rows_are_the_shared_linear_plus_each_blocks_ada_gss():
    m = random_tiny_shared(depth=3)
    cond = m.var.class_cond(torch.tensor([0, 4, 10]))
    mod = m.var.modulation(cond)
    lin = m.var.shared_ada_lin[1]
    shared_B6C = torch.nn.functional.linear(torch.nn.functional.silu(cond), lin.weight, lin.bias)
    shared_B6C = shared_B6C.view(3, 6, m.var.C)
    for i, b in enumerate(m.var.blocks):  # official: (ada_gss + shared).unbind(2), (B, 1, 6, C)
        assert torch.equal(m.var.block_modulation(mod, i), b.ada_gss[0] + shared_B6C)
    rows = [m.var.block_modulation(mod, i) for i in range(3)]
    assert (rows[0] - rows[1]).abs().max() > 0.1  # every block's ada_gss makes its own rows
    head = m.var.head_nm.ada_lin(cond).view(3, 2, m.var.C)  # the head keeps its own linear
    assert torch.equal(mod[:, -2:], head)


@torch.no_grad()
def test_f_hat_is_contiguous_and_decodes_bit_for_bit_like_the_official_loop():
    torch.manual_seed(0)
    vae = VQVAE(tiny_default().vqvae).eval()
    q, B = vae.quantize, 2
    idx = [torch.randint(0, q.vocab_size, (B, p * p)) for p in q.patch_nums]
    f_hat = q.idx_to_fhat(idx)
    # official: f_hat = zeros, f_hat.add_(phi(upsample(h))) in place at every scale
    ref = torch.zeros(B, q.Cvae, q.patch_nums[-1], q.patch_nums[-1])
    for si, (pn, i) in enumerate(zip(q.patch_nums, idx, strict=True)):
        h = q.embedding(i).transpose(1, 2).reshape(B, q.Cvae, pn, pn)
        if si < q.SN - 1:
            h = torch.nn.functional.interpolate(h, size=ref.shape[-2:], mode="bicubic")
        ref.add_(q.phi(si)(h))
    assert f_hat.is_contiguous() and torch.equal(f_hat, ref)
    assert torch.equal(vae.fhat_to_img(f_hat), vae.fhat_to_img(ref))


@pytest.mark.slow  # 14s on a busy 2-core machine
def test_usage_statistics_of_another_number_of_scales_load_with_one_warning(tmp_path, caplog):
    vae = VQVAE(VQVAEConfig(vocab_size=64, ch=32, patch_nums=(1, 2, 3, 4)))
    sd = {k: v.clone() for k, v in vae.state_dict().items()}
    sd["quantize.ema_vocab_hit_SV"] = torch.ones(10, 64)  # the 256 px VQVAE's 10 scales
    sd["quant_conv.bias"] = torch.full((32,), 0.5)
    torch.save(sd, tmp_path / "vae.pth")
    with caplog.at_level("WARNING"):
        load_into(vae, tmp_path / "vae.pth")
    (rec,) = caplog.records
    assert (
        "quantize.ema_vocab_hit_SV (10, 64)" in rec.getMessage() and "(4, 64)" in rec.getMessage()
    )
    assert "\n" not in rec.getMessage()
    assert torch.equal(vae.quantize.ema_vocab_hit_SV, torch.zeros(4, 64))  # as the official
    assert torch.equal(vae.quant_conv.bias, sd["quant_conv.bias"])
    sd["quantize.ema_vocab_hit_SV"] = torch.ones(4, 63)  # same scales, another vocabulary
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="ema_vocab_hit_SV: \\(4, 63\\) vs \\(4, 64\\)"):
        load_into(vae, tmp_path / "bad.pth")


def test_vqvae_official_format_loads_strictly(tmp_path):
    keys = vqvae_keys(ch=32, V=64, n_scales=4)
    sd = _official_format_state(keys, 1)
    torch.save(sd, tmp_path / "vae.pth")
    vae = VQVAE(VQVAEConfig(vocab_size=64, ch=32, patch_nums=(1, 2, 3, 4)))
    load_into(vae, tmp_path / "vae.pth")
    assert torch.equal(vae.quantize.embedding.weight, sd["quantize.embedding.weight"])


def test_wrong_shapes_are_refused_with_the_key_named(tmp_path):
    vae = VQVAE(VQVAEConfig(vocab_size=64, ch=32, patch_nums=(1, 2, 3, 4)))
    sd = vae.state_dict()
    sd["quant_conv.weight"] = torch.zeros(1)
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="quant_conv.weight"):
        load_into(vae, tmp_path / "bad.pth")


class _Evil:
    def __reduce__(self):
        return (print, ("this would run on load",))


def test_checkpoint_with_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"weight": torch.zeros(2), "payload": _Evil()}, path)
    vae = VQVAE(VQVAEConfig(vocab_size=64, ch=32, patch_nums=(1, 2, 3, 4)))
    with pytest.raises(CheckpointError, match="refused"):
        load_into(vae, path)


def test_corrupt_safetensors_is_refused(tmp_path):
    path = tmp_path / "x.safetensors"
    path.write_bytes(b"\x00\x01garbage")
    vae = VQVAE(VQVAEConfig(vocab_size=64, ch=32, patch_nums=(1, 2, 3, 4)))
    with pytest.raises(CheckpointError, match="not a valid safetensors"):
        load_into(vae, path)


def test_teacher_forced_input_matches_quantizer_pyramid():
    # The VAR input of scale k+1 is the area-downsampled running sum of the first k+1 scales.
    torch.manual_seed(0)
    vae = VQVAE(tiny_default().vqvae).eval()
    idx = vae.img_to_idx(torch.rand(3, 1, 16, 16) * 2 - 1)
    inp = vae.quantize.idx_to_var_input(idx)
    pns = vae.cfg.patch_nums
    assert inp.shape == (3, sum(p * p for p in pns[1:]), vae.Cvae)
    f_hat = vae.quantize.add_scale(0, None, idx[0])
    f_hat = vae.quantize.add_scale(1, f_hat, idx[1])
    third = torch.nn.functional.interpolate(f_hat, size=(3, 3), mode="area")
    got = inp[:, 4:13].transpose(1, 2).reshape(3, vae.Cvae, 3, 3)
    assert torch.allclose(got, third, atol=1e-6)
