"""How well zero-shot editing keeps what it should (``sasq.engines.edit``): held-out digits
inpainted, outpainted and class-edited on every backend, scored against the input, the
classifier and the first backend (``edit_quality``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from sasq.engines.config import EditConfig, EditTask, TokenRule
from sasq.engines.decode import StepBackend
from sasq.engines.edit import edit, masked_psnr
from sasq.models import LoadedModel

if TYPE_CHECKING:
    from sasq.tools.quality.classifier import DigitsClassifier


@dataclass(frozen=True)
class EditQualityConfig:
    n_images: int = 100  # held-out digits edited per task
    seed: int = 2000  # away from the seeds of generation quality, demos and tests
    rule: TokenRule = TokenRule.ANY
    reencode: bool = True


def _region_masks(S: int) -> dict[str, torch.Tensor]:
    """Inpaint the right half; class-edit the whole image or all but an S/8 border."""
    right = torch.zeros(1, 1, S, S)
    right[..., S // 2 :] = 1
    b = S // 8
    centre = torch.zeros(1, 1, S, S)
    centre[..., b : S - b, b : S - b] = 1
    return {"inpaint": right, "full": torch.ones(1, 1, S, S), "region": centre}


@torch.no_grad()
def _edit_suite(
    model: LoadedModel, backend: StepBackend, x: torch.Tensor, y: torch.Tensor,
    qc: EditQualityConfig,
) -> dict:  # fmt: skip
    """Every edit of the suite on one backend: images, tokens and the labels asked for."""
    masks, K = _region_masks(model.cfg.vqvae.image_size), model.cfg.var.num_classes
    common = dict(seed=qc.seed, rule=qc.rule, reencode=qc.reencode)
    run = {
        "inpaint": edit(model.cfg, model.vqvae, backend, x, masks["inpaint"],
                        EditConfig(EditTask.INPAINT, **common)),
        "outpaint": edit(model.cfg, model.vqvae, backend, x, None,
                         EditConfig(EditTask.OUTPAINT, **common)),
    }  # fmt: skip
    target = (y + 1) % K  # always another class than the digit's own
    for region in ("full", "region"):
        parts = [
            edit(model.cfg, model.vqvae, backend, x[target == c], masks[region],
                 EditConfig(EditTask.CLASS_EDIT, cls=c, **common))
            for c in range(K) if bool((target == c).any())
        ]  # fmt: skip
        run[f"class_{region}"] = parts
    # The class-edits run grouped by target class: their labels in that order.
    return {"runs": run, "target": target.sort(stable=True).values}


def _flat(suite: dict) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """All edited images of a suite and their per-scale tokens, in one fixed order."""
    r = suite["runs"]
    parts = [r["inpaint"], r["outpaint"], *r["class_full"], *r["class_region"]]
    tokens = [torch.cat([p.idx[si] for p in parts]) for si in range(len(parts[0].idx))]
    return torch.cat([p.img for p in parts]), tokens


@torch.no_grad()
def edit_quality(
    model: LoadedModel,
    backends: dict[str, StepBackend],
    clf: DigitsClassifier,
    qc: EditQualityConfig | None = None,
) -> dict:
    """Edit ``n_images`` held-out digits with every backend; the first is the reference.

    Per backend: PSNR outside the inpainted right half (against the VQ reconstruction of the
    input and against the input), PSNR of the kept centre of outpainting, the classifier's
    accuracy on class-edits to another class (whole image; all but a border, with the PSNR
    of that border), and against the reference: token agreement per scale and FID2FP, the
    FID between its edited images and the reference's for the same seeds.
    """
    from sasq.metrics import fid, token_agreement
    from sasq.tools.quality.classifier import predict
    from sasq.tools.quality.digits import load_split

    qc = qc or EditQualityConfig()
    split = load_split(model.cfg.vqvae.image_size)
    x, y = split.test_x[: qc.n_images], split.test_y[: qc.n_images]
    out, ref = {}, None
    for name, backend in backends.items():
        suite = _edit_suite(model, backend, x, y, qc)
        r = suite["runs"]
        ip, op = r["inpaint"], r["outpaint"]
        keep = ip.mask == 0
        row = {
            "n": int(x.shape[0]),
            "inpaint_psnr_outside_db": round(masked_psnr(ip.img, ip.recon, keep), 2),
            "inpaint_psnr_outside_vs_input_db": round(masked_psnr(ip.img, x, keep), 2),
            "outpaint_psnr_kept_db": round(masked_psnr(op.img, op.recon, op.mask == 0), 2),
        }
        for region in ("full", "region"):
            img = torch.cat([p.img for p in r[f"class_{region}"]])
            probs, _ = predict(clf, img)
            acc = float((probs.argmax(1) == suite["target"].numpy()).mean())
            row[f"class_edit_{region}_accuracy"] = round(acc, 4)
        reg = r["class_region"]
        border = torch.cat([p.mask for p in reg]) == 0
        row["class_edit_region_psnr_border_db"] = round(
            masked_psnr(torch.cat([p.img for p in reg]), torch.cat([p.recon for p in reg]),
                        border), 2)  # fmt: skip
        if ref is None:
            ref = suite
        else:
            (img_ref, tok_ref), (img_new, tok_new) = _flat(ref), _flat(suite)
            row["fid2fp"] = round(fid(predict(clf, img_new)[1], predict(clf, img_ref)[1]), 4)
            row["token_agreement"] = [round(a, 4) for a in token_agreement(tok_new, tok_ref)]
            row["max_abs_image_diff"] = float((img_new - img_ref).abs().max())
        out[name] = row
    return out
