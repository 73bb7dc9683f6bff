"""The released file names load without a config.json: the config is read off the weights
(depth, width, scales, shared AdaLN) and carries the official sampling; ``--vae/--var``
name the files directly; ambiguous or incomplete folders fail in one line."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from official_names import (
    OFFICIAL_CFG,
    OFFICIAL_TOP_K,
    OFFICIAL_TOP_P,
    RELEASED_VAE,
    RELEASED_VAR,
    var_keys,
    vqvae_keys,
)

import sasq.models as M
from sasq.models.config import VQVAEConfig, official, official_var
from sasq.models.released import infer_config
from sasq.tools.cli import main

PNS = (1, 2, 3, 4)


def _official_small(shared: bool) -> M.LoadedModel:
    """An official-structure VAR-d2 (width 128, 2 heads) and a ch=32 VQVAE, random."""
    torch.manual_seed(0)
    var = dataclasses.replace(official_var(2, PNS, shared), num_classes=10)
    cfg = M.ModelConfig(vqvae=VQVAEConfig(vocab_size=64, ch=32, patch_nums=PNS), var=var)
    return M.build(cfg)


def _save_released(m: M.LoadedModel, folder, var_name="var_d2.pth"):
    folder.mkdir(parents=True, exist_ok=True)
    vae_sd, var_sd = m.vqvae.state_dict(), m.var.state_dict()
    # the files hold exactly the official names and shapes
    assert {k: tuple(v.shape) for k, v in vae_sd.items()} == vqvae_keys(32, 64, n_scales=4)
    spec = var_keys(2, V=64, num_classes=10, patch_nums=PNS, shared_aln=m.cfg.var.shared_aln)
    assert {k: tuple(v.shape) for k, v in var_sd.items()} == spec
    torch.save(vae_sd, folder / RELEASED_VAE)
    torch.save(var_sd, folder / var_name)
    return folder


@pytest.mark.parametrize("shared", [False, True])
def test_folder_with_the_released_names_loads_with_the_config_read_off_the_weights(
    tmp_path, shared
):
    m = _official_small(shared)
    loaded = M.load_model(_save_released(m, tmp_path / "ckpt"))
    assert loaded.cfg.vqvae == m.cfg.vqvae
    assert loaded.cfg.var == m.cfg.var
    s = loaded.cfg.sampling
    assert (s.cfg, s.top_k, s.top_p, s.more_smooth) == (
        OFFICIAL_CFG,
        min(OFFICIAL_TOP_K, m.cfg.vqvae.vocab_size),  # top-k over all tokens filters nothing
        OFFICIAL_TOP_P,
        False,
    )
    for k, v in m.var.state_dict().items():
        assert torch.equal(loaded.var.state_dict()[k], v), k
    with torch.no_grad():  # and it computes what the model that wrote the files computes
        cond = m.var.class_cond(torch.tensor([1, 10]))
        ref, _ = m.var.decode_step(m.var.first_input(cond), m.var.modulation(cond), None)
        got, _ = loaded.var.decode_step(
            loaded.var.first_input(cond), loaded.var.modulation(cond), None
        )
    assert torch.equal(ref, got)


@pytest.mark.parametrize("depth", sorted(RELEASED_VAR))
def test_every_released_structure_infers_its_preset(depth):
    # Shapes only, on the meta device; d36 without lvl_1L exercises the scale-list lookup.
    name, pns, shared = RELEASED_VAR[depth]
    var = {
        k: torch.empty(s, device="meta")
        for k, s in var_keys(depth, patch_nums=pns, shared_aln=shared).items()
    }
    vae = {k: torch.empty(s, device="meta") for k, s in vqvae_keys().items()}
    if depth == 36:
        del var["lvl_1L"]
    else:
        var["lvl_1L"] = torch.cat([torch.full((p * p,), i) for i, p in enumerate(pns)])[None]
    assert infer_config(vae, var, name) == official(depth)


@pytest.mark.slow  # 10s on a busy 2-core machine
def test_cli_generate_with_vae_and_var_files_and_no_config(tmp_path, capsys):
    m = _official_small(True)
    d = _save_released(m, tmp_path / "elsewhere", var_name="my_var.pth")
    out = tmp_path / "grid.png"
    args = ["generate", "--vae", str(d / RELEASED_VAE), "--var", str(d / "my_var.pth")]
    assert main([*args, "--n", "2", "--class", "3", "--more-smooth", "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["sampling"] == {
        "cfg": OFFICIAL_CFG,
        "top_k": min(OFFICIAL_TOP_K, m.cfg.vqvae.vocab_size),
        "top_p": OFFICIAL_TOP_P,
        "more_smooth": True,
    }
    assert out.stat().st_size > 0


@pytest.mark.parametrize(
    "setup,needle",
    [
        ("two_vars", "several VAR checkpoints (var_d2.pth, var_d4.pth); pick one with --var"),
        ("no_var", "missing var.safetensors (or the released var_d{depth}.pth)"),
        ("vae_only_flag", "--vae and --var go together"),
    ],
)
@pytest.mark.slow  # 12s on a busy 2-core machine (one case)
def test_incomplete_or_ambiguous_folders_fail_in_one_line(tmp_path, capsys, setup, needle):
    d = _save_released(_official_small(False), tmp_path / "ckpt")
    args = ["generate", "--model", str(d)]
    if setup == "two_vars":
        (d / "var_d4.pth").write_bytes((d / "var_d2.pth").read_bytes())
    elif setup == "no_var":
        (d / "var_d2.pth").unlink()
    else:
        args = ["generate", "--vae", str(d / RELEASED_VAE)]
    assert main([*args, "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.png").exists()
    if setup == "two_vars":  # naming one resolves it
        args += ["--var", str(d / "var_d2.pth"), "--n", "1"]
        assert main([*args, "--out", str(tmp_path / "x.png")]) == 0
