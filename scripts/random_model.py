"""A randomly initialised official-size VAR as a model folder any ``sasq --model`` reads.

    .venv/bin/python scripts/random_model.py 16 out/d16/model

Seeded (the same weights in every process, so an export and a later run agree), with the
official patch_nums and a narrow VQVAE decoder (``export_d16.build``'s choice: the decoder
is not what the TensorRT step engines are about). Used by ``scripts/gpu_check.py``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from export_d16 import build

from sasq.models.checkpoint import save_safetensors


def main(argv: list[str]) -> int:
    depth, out = int(argv[0]), Path(argv[1])
    if depth != 16:
        raise SystemExit("only depth 16 is wired here (export_d16.build)")
    m = build("small")
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(json.loads(m.cfg.to_json())))
    save_safetensors(m.vqvae, out / "vqvae.safetensors")
    save_safetensors(m.var, out / "var.safetensors")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
