"""Training of the embedded default model on scikit-learn's bundled digits (no download).

Three stages, each deterministic under the seed: the VQVAE (with dead-code restarts so the
small codebook is used), the class-conditional VAR on teacher-forced token pyramids of the
(shift-augmented) training digits, and the digits classifier used for evaluation.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F

from sasq import files
from sasq.models import LoadedModel, ModelConfig, build, tiny_default
from sasq.models.checkpoint import save_safetensors
from sasq.progress import bar as progress_bar
from sasq.tools.train.config import TrainConfig
from sasq.tools.train.model_card import write_model_card


def _cosine_lr(opt: torch.optim.Optimizer, base: float, step: int, total: int, warmup: int):
    if step < warmup:
        lr = base * (step + 1) / warmup
    else:
        lr = (
            base
            * 0.5
            * (1 + torch.cos(torch.tensor((step - warmup) / (total - warmup) * 3.14159265)).item())
        )
    for g in opt.param_groups:
        g["lr"] = lr


def train_vqvae(m: LoadedModel, train_x: torch.Tensor, tc: TrainConfig, progress: bool) -> dict:
    vae = m.vqvae.train()
    gen = torch.Generator().manual_seed(tc.seed)
    opt = torch.optim.AdamW(vae.parameters(), lr=tc.vae_lr, weight_decay=0.0, betas=(0.9, 0.95))
    V = vae.V
    hits = torch.zeros(V)
    bar = progress_bar(range(tc.vae_steps), "vqvae", enabled=progress)
    for step in bar:
        _cosine_lr(opt, tc.vae_lr, step, tc.vae_steps, 100)
        x = train_x[torch.randint(len(train_x), (tc.vae_batch,), generator=gen)]
        rec, vq_loss, hit_V = vae(x)
        rec_loss = F.mse_loss(rec, x) + 0.5 * F.l1_loss(rec, x)
        loss = rec_loss + vq_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        hits += hit_V
        # Dead-code restart: unused entries jump onto random latents of the current batch.
        if step % 100 == 99 and step < tc.vae_steps * 0.8:
            dead = (hits == 0).nonzero().flatten()
            if len(dead):
                with torch.no_grad():
                    f = vae.quant_conv(vae.encoder(x)).permute(0, 2, 3, 1).reshape(-1, vae.Cvae)
                    pick = torch.randint(len(f), (len(dead),), generator=gen)
                    vae.quantize.embedding.weight[dead] = f[pick]
            hits.zero_()
        if step % 50 == 0:
            bar.set_postfix(rec=f"{rec_loss.item():.4f}", vq=f"{vq_loss.item():.4f}")
    vae.eval()
    with torch.no_grad():
        idx = vae.img_to_idx(train_x)
        used = torch.cat([i.flatten() for i in idx]).unique().numel()
    return {"vqvae_final_rec_loss": round(rec_loss.item(), 5), "codebook_used": int(used)}


def shifted(x: torch.Tensor, shifts: int) -> tuple[torch.Tensor, int]:
    """All +-shifts translations of x (zero-filled with the background value -1)."""
    out = []
    for dy in range(-shifts, shifts + 1):
        for dx in range(-shifts, shifts + 1):
            pad = F.pad(x, (shifts, shifts, shifts, shifts), value=-1.0)
            H, W = x.shape[-2:]
            out.append(pad[..., shifts + dy : shifts + dy + H, shifts + dx : shifts + dx + W])
    return torch.cat(out), len(out)


def train_var(
    m: LoadedModel, train_x: torch.Tensor, train_y: torch.Tensor, tc: TrainConfig, progress: bool
) -> dict:
    q = m.vqvae.quantize
    xs, k = shifted(train_x, tc.shifts)
    ys = train_y.repeat(k)
    with torch.no_grad():
        idx = m.vqvae.img_to_idx(xs)
        inp = q.idx_to_var_input(idx)
        target = torch.cat(idx, dim=1)
    var = m.var.train()
    gen = torch.Generator().manual_seed(tc.seed + 1)
    decay = [
        p for n, p in var.named_parameters() if p.ndim >= 2 and "emb" not in n and "pos" not in n
    ]
    no_decay = [
        p
        for n, p in var.named_parameters()
        if not (p.ndim >= 2 and "emb" not in n and "pos" not in n)
    ]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": tc.var_wd}, {"params": no_decay, "weight_decay": 0.0}],
        lr=tc.var_lr,
        betas=(0.9, 0.95),
    )
    bar = progress_bar(range(tc.var_steps), "var", enabled=progress)
    for step in bar:
        _cosine_lr(opt, tc.var_lr, step, tc.var_steps, 200)
        b = torch.randint(len(ys), (tc.var_batch,), generator=gen)
        logits = var(ys[b], inp[b], generator=gen)
        loss = F.cross_entropy(logits.reshape(-1, var.V), target[b].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(var.parameters(), 2.0)
        opt.step()
        if step % 50 == 0:
            bar.set_postfix(ce=f"{loss.item():.3f}")
    var.eval()
    return {"var_final_ce": round(loss.item(), 4), "var_train_pyramids": int(len(ys))}


def train_default(
    out_dir: Path,
    tc: TrainConfig,
    cfg: ModelConfig | None = None,
    preset: str = "default",
    progress: bool = True,
) -> dict:
    """Train VQVAE, VAR and classifier; write safetensors + config + metrics to ``out_dir``."""
    from sasq.tools.quality.classifier import train_classifier
    from sasq.tools.quality.digits import load_split

    torch.set_num_threads(tc.threads)
    torch.manual_seed(tc.seed)
    cfg = cfg or tiny_default()
    split = load_split(cfg.vqvae.image_size)
    m = build(cfg)
    t0 = time.perf_counter()
    metrics = {"seed": tc.seed}
    metrics |= train_vqvae(m, split.train_x, tc, progress)
    t1 = time.perf_counter()
    metrics |= train_var(m, split.train_x, split.train_y, tc, progress)
    t2 = time.perf_counter()
    clf, clf_metrics = train_classifier(split, seed=tc.seed, progress=progress)
    t3 = time.perf_counter()
    metrics |= {f"classifier_{k}": v for k, v in clf_metrics.items()}
    metrics |= {
        "train_seconds": {
            "vqvae": round(t1 - t0, 1),
            "var": round(t2 - t1, 1),
            "classifier": round(t3 - t2, 1),
            "total": round(t3 - t0, 1),
        },
        "machine": {
            "cpu_threads": tc.threads,
            "platform": platform.platform(),
            "torch": torch.__version__,
        },
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    save_safetensors(m.vqvae, out_dir / "vqvae.safetensors")
    save_safetensors(m.var, out_dir / "var.safetensors")
    save_safetensors(clf, out_dir / "classifier.safetensors")
    files.write_json(out_dir / "config.json", json.loads(cfg.to_json()))
    train = {"train_config": asdict(tc), "metrics": metrics}
    files.write_json(out_dir / "train.json", train)
    quality = evaluate_default(out_dir)
    files.write_json(out_dir / "quality.json", quality)
    command = (
        f"sasq train-default --out {out_dir} --preset {preset} --seed {tc.seed} "
        f"--vae-steps {tc.vae_steps} --var-steps {tc.var_steps} --var-batch {tc.var_batch} "
        f"--threads {tc.threads}"
    )
    write_model_card(out_dir, command, train, quality)
    return metrics | {"quality": quality}


def evaluate_default(model_dir: Path) -> dict:
    """The numbers of the model card: classifier, VQ round trip and generation quality."""
    from sasq.engines.backends import make_backend
    from sasq.models import load_model
    from sasq.tools.quality.scores import (
        GenQualityConfig,
        default_classifier,
        generation_quality,
        real_data_floor,
    )

    model = load_model(model_dir)
    clf = default_classifier(model_dir)
    gq = generation_quality(model, make_backend("torch", model), clf, GenQualityConfig())
    return (
        real_data_floor(model, clf)
        | {f"generated_{k}": v for k, v in gq.items()}
        | {"generated_cfg": model.cfg.sampling.cfg}
    )
