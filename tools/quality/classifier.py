"""A small digits CNN for evaluation: class accuracy of generated images, and features/probs
for FID and Inception Score.

Inception-v3 knows nothing about 16x16 digits, so the quality metrics use this network
instead: its 64-dim penultimate activations play the role of the pool3 features, its softmax
the role of p(y|x). It trains in seconds on CPU from the embedded split, deterministically, so
the committed weights can be reproduced from the seed.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sasq.progress import bar as progress_bar
from sasq.tools.quality.digits import NUM_CLASSES, DigitsSplit

FEATURE_DIM = 64


class DigitsClassifier(nn.Module):
    """(B, 1, 16, 16) in [-1, 1] -> 64 ReLU features -> 10 logits (about 50k parameters).

    BatchNorm after each conv is what lets a few CPU epochs reach ~99% held-out accuracy.
    """

    def __init__(self, num_classes: int = NUM_CLASSES, feature_dim: int = FEATURE_DIM):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)  # 16x16
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)  # 8x8 after pooling
        self.conv3 = nn.Conv2d(32, 32, 3, padding=1)  # 8x8
        self.conv4 = nn.Conv2d(32, 64, 3, padding=1)  # 4x4 after pooling
        self.bn1, self.bn2 = nn.BatchNorm2d(16), nn.BatchNorm2d(32)
        self.bn3, self.bn4 = nn.BatchNorm2d(32), nn.BatchNorm2d(64)
        self.proj = nn.Linear(64 * 2 * 2, feature_dim)  # 2x2 after pooling
        self.fc = nn.Linear(feature_dim, num_classes)

    def features(self, x_B1HW: torch.Tensor) -> torch.Tensor:
        """Penultimate activations (B, 64), after ReLU: the feature space for FID.

        Larger images (the 32 px embedded model) are area-averaged to 16 px first: the
        digits are 8x8 at heart, so nothing the classifier could use is lost, and every
        embedded model is scored in one feature space."""
        if x_B1HW.shape[-2:] != (16, 16):
            x_B1HW = F.adaptive_avg_pool2d(x_B1HW, 16)
        h = F.max_pool2d(F.relu(self.bn1(self.conv1(x_B1HW))), 2)
        h = F.relu(self.bn2(self.conv2(h)))
        h = F.max_pool2d(F.relu(self.bn3(self.conv3(h))), 2)
        h = F.max_pool2d(F.relu(self.bn4(self.conv4(h))), 2)
        return F.relu(self.proj(h.flatten(1)))

    def forward(self, x_B1HW: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x_B1HW))


def _shift(x_B1HW: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Roll the whole batch by one random (dy, dx) in {-1, 0, 1}^2: cheap translation jitter.

    The digits have blank borders, so wrapping a pixel row around does not corrupt them.
    """
    dy, dx = (torch.randint(-1, 2, (2,), generator=gen)).tolist()
    return torch.roll(x_B1HW, shifts=(dy, dx), dims=(2, 3))


@torch.no_grad()
def _accuracy(model: DigitsClassifier, x_B1HW: torch.Tensor, y_B: torch.Tensor) -> float:
    probs_BK, _ = predict(model, x_B1HW)
    return float((probs_BK.argmax(1) == y_B.numpy()).mean())


def train_classifier(
    split: DigitsSplit,
    *,
    seed: int = 0,
    epochs: int = 8,
    batch_size: int = 64,
    lr: float = 5e-3,
    num_threads: int | None = 1,
    progress: bool = True,
) -> tuple[DigitsClassifier, dict]:
    """Train on split.train_* with Adam and a one-cycle schedule; return (model in eval, metrics).

    Deterministic for a given seed: the weights come from torch.manual_seed, the shuffling and
    augmentation from their own torch.Generator. Training runs with `num_threads` intra-op
    threads (restored afterwards; None leaves torch's setting alone): ops this small gain
    nothing from more threads, are 3-4x slower on a busy 2-core machine with them, and one
    thread fixes the reduction order, so the weights do not depend on the core count.
    """
    prev_threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        return _train(
            split, seed=seed, epochs=epochs, batch_size=batch_size, lr=lr, progress=progress
        )
    finally:
        torch.set_num_threads(prev_threads)


def _train(
    split: DigitsSplit, *, seed: int, epochs: int, batch_size: int, lr: float, progress: bool
) -> tuple[DigitsClassifier, dict]:
    torch.manual_seed(seed)
    model = DigitsClassifier()
    gen = torch.Generator().manual_seed(seed)
    n = split.train_x.shape[0]
    steps_per_epoch = (n + batch_size - 1) // batch_size
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, total_steps=epochs * steps_per_epoch
    )
    t0 = time.perf_counter()
    bar = progress_bar(range(epochs), "classifier", enabled=progress)
    loss_val = float("nan")
    for _ in bar:
        model.train()
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, batch_size):
            idx = perm[i : i + batch_size]
            x_B1HW = _shift(split.train_x[idx], gen)
            loss = F.cross_entropy(model(x_B1HW), split.train_y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_val = loss.item()
        bar.set_postfix(loss=f"{loss_val:.4f}")
    train_seconds = time.perf_counter() - t0
    model.eval()
    metrics = {
        "seed": seed,
        "epochs": epochs,
        "train_loss": loss_val,
        "train_accuracy": _accuracy(model, split.train_x, split.train_y),
        "test_accuracy": _accuracy(model, split.test_x, split.test_y),
        "train_seconds": train_seconds,
        "num_parameters": sum(p.numel() for p in model.parameters()),
    }
    return model, metrics


def save_classifier(model: DigitsClassifier, path: str | Path) -> Path:
    """Write the state dict as safetensors (no pickles, atomically), creating the folder."""
    from sasq.models.checkpoint import save_safetensors

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_safetensors(model, path)
    return path


def load_classifier(path: str | Path) -> DigitsClassifier:
    """Load a safetensors state dict strictly (any missing or extra key raises); eval mode."""
    from safetensors.torch import load_file

    model = DigitsClassifier()
    model.load_state_dict(load_file(str(path), device="cpu"), strict=True)
    return model.eval()


@torch.no_grad()
def predict(
    model: DigitsClassifier, img_B1HW: torch.Tensor, batch: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """Softmax probabilities (B, 10) and features (B, 64) as float64 numpy, in batches."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    probs, feats = [], []
    for i in range(0, img_B1HW.shape[0], batch):
        x_b1HW = img_B1HW[i : i + batch].to(device=device, dtype=torch.float32)
        feat_bF = model.features(x_b1HW)
        probs.append(F.softmax(model.fc(feat_bF).double(), dim=-1).cpu().numpy())
        feats.append(feat_bF.double().cpu().numpy())
    model.train(was_training)
    k = model.fc.out_features
    if not probs:
        return np.zeros((0, k)), np.zeros((0, model.fc.in_features))
    return np.concatenate(probs), np.concatenate(feats)
