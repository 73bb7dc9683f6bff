"""Quality of generated digits on the classifier: class accuracy, FID to real digits, IS."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from sasq.engines.config import GenerateConfig
from sasq.engines.decode import StepBackend
from sasq.engines.generate import generate_many
from sasq.metrics import fid, inception_score
from sasq.models import DEFAULT_DIR, LoadedModel
from sasq.tools.quality.classifier import DigitsClassifier, load_classifier, predict
from sasq.tools.quality.digits import load_split


@dataclass(frozen=True)
class GenQualityConfig:
    per_class: int = 100
    seed: int = 1000  # away from the seeds used in demos and tests
    batch: int = 100


def default_classifier(model_dir: Path | None = None) -> DigitsClassifier:
    return load_classifier((model_dir or DEFAULT_DIR) / "classifier.safetensors")


@torch.no_grad()
def generation_quality(
    model: LoadedModel, backend: StepBackend, clf: DigitsClassifier, qc: GenQualityConfig
) -> dict:
    """Generate per_class images of every class; score them against held-out real digits."""
    K = model.var.num_classes
    labels = tuple(c for c in range(K) for _ in range(qc.per_class))
    gen = generate_many(model.cfg, backend, GenerateConfig(labels, qc.seed, qc.batch))
    probs, feats = predict(clf, gen.img)
    split = load_split(model.cfg.vqvae.image_size)
    _, real_feats = predict(clf, split.test_x)
    acc = float((probs.argmax(1) == torch.tensor(labels).numpy()).mean())
    return {
        "n": len(labels),
        "class_accuracy": round(acc, 4),
        "fid_to_real_test": round(fid(feats, real_feats), 3),
        "inception_score": round(inception_score(probs), 3),
    }


@torch.no_grad()
def real_data_floor(model: LoadedModel, clf: DigitsClassifier) -> dict:
    """Reference numbers: classifier test accuracy, VQ reconstruction FID and PSNR."""
    from sasq.metrics import psnr

    split = load_split(model.cfg.vqvae.image_size)
    probs, real_feats = predict(clf, split.test_x)
    _, train_feats = predict(clf, split.train_x)
    rec = model.vqvae.idx_to_img(model.vqvae.img_to_idx(split.test_x))
    _, rec_feats = predict(clf, rec)
    return {
        "classifier_test_accuracy": round(
            float((probs.argmax(1) == split.test_y.numpy()).mean()), 4
        ),
        "fid_train_vs_test": round(fid(train_feats, real_feats), 3),
        "vq_reconstruction_psnr_db": round(psnr(rec, split.test_x), 2),
        "fid_reconstruction_vs_test": round(fid(rec_feats, real_feats), 3),
    }
