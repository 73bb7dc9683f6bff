"""The model card of a trained default model: config, command, seed, time, metrics."""

from __future__ import annotations

import json
from pathlib import Path

from sasq import files


def write_model_card(model_dir: Path, command: str, train: dict, quality: dict) -> Path:
    cfg = json.loads((model_dir / "config.json").read_text())
    sizes = {p.name: p.stat().st_size for p in sorted(model_dir.glob("*.safetensors"))}
    m = train["metrics"]
    lines = [
        "# sasq embedded default model",
        "",
        "A tiny multi-scale VQVAE + class-conditional VAR trained on scikit-learn's bundled",
        "8x8 digits (1,797 images, no download), upsampled to "
        f"{cfg['vqvae']['patch_nums'][-1] * 2 ** (len(cfg['vqvae']['ch_mult']) - 1)} px, and a",
        "small CNN digits classifier used to evaluate generated images (accuracy, FID, IS",
        "on its 64-d features). Train/held-out split: stratified 80/20, random_state=0.",
        "",
        "## Reproduce",
        "",
        "```sh",
        command,
        "```",
        "",
        f"Seed {m['seed']}; training time {m['train_seconds']['total']} s on "
        f"{m['machine']['cpu_threads']} CPU threads ({m['train_seconds']}).",
        "",
        "## Metrics",
        "",
        "| metric | value |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in quality.items() if not isinstance(v, dict)],
        *[f"| {k} | {v} |" for k, v in m.items() if k not in ("train_seconds", "machine", "seed")],
        "",
        "## Files",
        "",
        *[f"- `{n}`: {s / 1e6:.2f} MB" for n, s in sizes.items()],
        f"- total {sum(sizes.values()) / 1e6:.2f} MB",
        "",
        "## Config",
        "",
        "```json",
        json.dumps(cfg, indent=2),
        "```",
        "",
        "## Training settings",
        "",
        "```json",
        json.dumps(train["train_config"], indent=2),
        "```",
        "",
    ]
    return files.write_text(model_dir / "MODEL_CARD.md", "\n".join(lines))
