"""Calibration measurements for the notes: resampling TV at several sample counts on the
embedded default, and peak memory (RSS) of calibrating it and a random VAR-d16.

    python scripts/calib_study.py tv [MODEL]    # TV table at 16, 32, 128 images (default,
                                                # or another embedded model: digits32)
    python scripts/calib_study.py rss-default   # 32 images (run in its own process)
    python scripts/calib_study.py rss-d16 [B]   # 8 images in batches of B, random d16
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from sasq.calib.calibrate import CalibConfig, calibrate
from sasq.exporter import export_model
from sasq.models import build, load_model
from sasq.models.config import ModelConfig, VQVAEConfig, official_var


def tv_table(onnx_dir: Path) -> str:
    rows = ["| images | scale | TV plain | TV resampled | ratio |", "|---|---|---|---|---|"]
    for n in (16, 32, 128):
        plain = calibrate(
            onnx_dir, CalibConfig(num_samples=n, resample="none", observer="minmax", progress=False)
        )
        ours = calibrate(
            onnx_dir, CalibConfig(num_samples=n, observer="minmax", batch=n, progress=False)
        )
        for si, (before, _) in plain.tv_by_scale.items():
            after = ours.tv_by_scale[si][1]
            rows.append(f"| {n} | {si} | {before:.4f} | {after:.4f} | {after / before:.2f} |")
        tp = sum(b for b, _ in plain.tv_by_scale.values())
        to = sum(a for _, a in ours.tv_by_scale.values())
        rows.append(f"| {n} | sum | {tp:.4f} | {to:.4f} | {to / tp:.2f} |")
    return "\n".join(rows)


def _export(kind: str, out: Path) -> None:
    if kind != "d16":
        export_model(load_model(kind), out)
        return
    var = official_var(16)
    vae = VQVAEConfig(
        ch=32, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=1, using_sa=False, patch_nums=var.patch_nums
    )
    export_model(build(ModelConfig(vqvae=vae, var=var)), out)


def main() -> None:
    what = sys.argv[1]
    if what == "export":  # child process: keeps export memory out of the RSS figure
        _export(sys.argv[2], Path(sys.argv[3]))
        return
    with tempfile.TemporaryDirectory() as tmp:
        fp = Path(tmp) / "fp"
        kind = "d16" if what == "rss-d16" else "default"
        if what == "tv" and len(sys.argv) > 2:
            kind = sys.argv[2]
        subprocess.run([sys.executable, __file__, "export", kind, str(fp)], check=True)
        if what == "tv":
            print(tv_table(fp))
            return
        n = 8 if kind == "d16" else 32
        r = calibrate(fp, CalibConfig(num_samples=n, batch=n, progress=False))
        print(
            f"{what}: {n} images, {len(r.cache.ranges)} tensors, {r.seconds:.1f} s, "
            f"peak RSS {r.peak_rss_mb:.0f} MB (calibration process only)"
        )


if __name__ == "__main__":
    main()
