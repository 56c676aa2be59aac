"""Training S1 and S2 the way the method prescribes, and assembling them into a bundle.

S1 learns on images downscaled by ``s1_scale`` (with up to +5 % scale jitter) and random crops; S2
on random full-resolution crops whose sizes cover the windows ``predict`` will use, so that one S2
serves every N_p. Loss = focal + (1 - soft Dice); Adam with cosine decay; flips and 90-degree
rotations as the spec allows; bf16 autocast with channels_last on CPU. Each epoch ends with the
validation Dice (held-out training images, inside the field of view); the best weights are kept.

Glossary
    image    uint8/uint16 (H, W, C) as read; target: float32 (H, W) in [0, 1] (soft after resizing)
    batch    float32 (N, C, h, w) normalised crops; logits (N, 1, h, w) stay inside this module
Files in ``out/<stage>/``: ``last.pt`` (resumable checkpoint), ``best.pt`` (best weights), ``log.csv``.
"""
import csv
import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import __version__
from .data import read_sample
from .errors import InputError
from .infer import run_whole
from .io import atomic_output
from .metrics import dice
from .models import Bundle, UNet, UNetConfig, save_bundle
from .prepare import as_float_image
from .stage1 import resize, stage1

STAGES = ("s1", "s2")
S1_JITTER = (1.0, 1.025, 1.05)  # stage-1 training scales, times s1_scale (the paper's +5 %)
VAL_MAX_PIXELS = 1_200_000       # larger validation images are evaluated on fixed crops
VAL_CROP = 768


@dataclass
class TrainOptions:
    stage: str = "s2"
    epochs: int = 40
    steps_per_epoch: int = 50
    batch_size: int = 8
    crop: int = 256                  # S2: largest crop side (full resolution); S1: crop side at 1/8 scale
    crop_sizes: tuple = (64, 96, 128, 192, 256)   # S2 crop sides; batches keep crop * crop * batch pixels
    lr: float = 1e-3
    seed: int = 0
    bf16: bool = True
    width: int = 16
    depth: int = 4
    s1_scale: float = 0.125
    val_fraction: float = 0.15
    sampling: str = "uniform"        # S2 crop centres: uniform, or "uncertain" (in proportion to S1 uncertainty)
    max_minutes: float | None = None
    focal_gamma: float = 2.0


# ---------------------------------------------------------------- data

def split_train_val(samples, fraction, seed):
    """(train, validation) samples: a seeded ``fraction`` (at least one) held out for validation."""
    rng = np.random.default_rng(seed)
    n_val = max(1, round(fraction * len(samples))) if len(samples) > 1 else 0
    held = set(rng.choice(len(samples), n_val, replace=False).tolist())
    return [s for i, s in enumerate(samples) if i not in held], [s for i, s in enumerate(samples) if i in held]


def load_images(spec, samples, channels):
    """[(float32 image (H, W, C) in [0, 1], target float32 (H, W), fov bool or None)] for samples."""
    loaded = []
    for sample in samples:
        image, target, fov = read_sample(spec, sample)
        loaded.append((as_float_image(image, channels)[0], target.astype(np.float32), fov))
    return loaded


def channel_stats(images):
    """Per-channel mean and std over all training pixels (the bundle's normalisation)."""
    total = sum(im.reshape(-1, im.shape[2]).astype(np.float64).sum(0) for im, _, _ in images)
    count = sum(im.shape[0] * im.shape[1] for im, _, _ in images)
    mean = total / count
    sq = sum(((im.reshape(-1, im.shape[2]) - mean) ** 2).sum(0) for im, _, _ in images)
    return tuple(float(m) for m in mean), tuple(float(max(s, 1e-3)) for s in np.sqrt(sq / count))


def s1_views(images, scale):
    """Each image and target downscaled (INTER_AREA) at every jitter scale: [[(image, target)]]."""
    views = []
    for image, target, _ in images:
        per_scale = []
        for jitter in S1_JITTER:
            h, w = max(1, round(image.shape[0] * scale * jitter)), max(1, round(image.shape[1] * scale * jitter))
            per_scale.append((resize(image, h, w, cv2.INTER_AREA), resize(target[:, :, None], h, w, cv2.INTER_AREA)[:, :, 0]))
        views.append(per_scale)
    return views


def augment(image, target, rng, rules):
    """Random flips and 90-degree rotations, as the spec's ``augment`` allows."""
    if rules.get("hflip", True) and rng.random() < 0.5:
        image, target = image[:, ::-1], target[:, ::-1]
    if rules.get("vflip", True) and rng.random() < 0.5:
        image, target = image[::-1], target[::-1]
    if rules.get("rotate90", True) and rng.random() < 0.5:
        image, target = np.rot90(image), np.rot90(target)
    return image, target


def crop_at(array, y, x, size):
    """``size`` x ``size`` crop at (y, x), mirrored where the array is smaller than the crop."""
    pad_y, pad_x = max(0, size - array.shape[0]), max(0, size - array.shape[1])
    if pad_y or pad_x:
        widths = ((0, pad_y), (0, pad_x)) + ((0, 0),) * (array.ndim - 2)
        array = np.pad(array, widths, mode="reflect" if min(array.shape[:2]) > 1 else "edge")
    return array[y:y + size, x:x + size]


class CropSampler:
    """Random crops for one stage: S1 from downscaled views, S2 from full-resolution images."""

    def __init__(self, opts, images, augment_rules, centre_weights=None):
        self.opts, self.rules, self.weights = opts, augment_rules, centre_weights
        self.images = images if opts.stage == "s2" else None
        self.views = s1_views(images, opts.s1_scale) if opts.stage == "s1" else None
        multiple = 2 ** opts.depth
        if opts.stage == "s1":
            smallest = min(min(v[0][0].shape[:2]) for v in self.views)
            self.sizes = (max(multiple, min(opts.crop, smallest) // multiple * multiple),)
        else:
            smallest = min(min(im.shape[:2]) for im, _, _ in images)
            self.sizes = tuple(s for s in opts.crop_sizes if s <= max(smallest, multiple)) or (multiple,)

    def _centre(self, rng, index, shape, size):
        weights = None if self.weights is None else self.weights[index]
        if weights is None:
            return int(rng.integers(0, max(1, shape[0] - size + 1))), int(rng.integers(0, max(1, shape[1] - size + 1)))
        flat = rng.choice(weights.size, p=weights.ravel())
        cy, cx = divmod(int(flat), weights.shape[1])
        cy = int((cy + rng.random()) * shape[0] / weights.shape[0])
        cx = int((cx + rng.random()) * shape[1] / weights.shape[1])
        return (int(np.clip(cy - size // 2, 0, max(0, shape[0] - size))),
                int(np.clip(cx - size // 2, 0, max(0, shape[1] - size))))

    def batch(self, rng):
        """(images float32 (N, h, w, C), targets float32 (N, h, w)); N * h * w about constant."""
        size = int(rng.choice(self.sizes))
        n = max(1, min(64, round(self.opts.batch_size * (max(self.sizes) / size) ** 2)))
        crops, targets = [], []
        for _ in range(n):
            index = int(rng.integers(len(self.views or self.images)))
            if self.views is not None:
                image, target = self.views[index][int(rng.integers(len(S1_JITTER)))]
            else:
                image, target, _ = self.images[index]
            y, x = self._centre(rng, index, image.shape, size)
            image, target = augment(crop_at(image, y, x, size), crop_at(target, y, x, size), rng, self.rules)
            crops.append(image)
            targets.append(target)
        return np.stack(crops), np.stack(targets)


def uncertainty_weights(s1_model, images, mean, std, scale, floor=0.05):
    """Per training image, a sampling distribution over the stage-1 grid ∝ 1 - 2|p - 0.5| + floor."""
    weights = []
    for image, _, _ in images:
        small = resize(image, max(1, round(image.shape[0] * scale)), max(1, round(image.shape[1] * scale)), cv2.INTER_AREA)
        prob = run_whole(s1_model, small, mean, std)[0]
        w = 1.0 - 2.0 * np.abs(prob.astype(np.float64) - 0.5) + floor
        weights.append(w / w.sum())
    return weights


# ---------------------------------------------------------------- loss and steps

def focal_dice_loss(logits, target, gamma):
    """Focal loss (Lin et al. 2017, soft targets allowed) + (1 - soft Dice over the batch)."""
    logits = logits.float()
    prob = torch.sigmoid(logits)
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_true = prob * target + (1 - prob) * (1 - target)
    focal = ((1 - p_true) ** gamma * bce).mean()
    soft_dice = (2 * (prob * target).sum() + 1) / (prob.sum() + target.sum() + 1)
    return focal + (1 - soft_dice)


def to_tensor(crops, mean, std):
    """(N, h, w, C) float32 in [0, 1] -> normalised (N, C, h, w) in channels_last memory format."""
    x = (crops - np.float32(mean)) / np.float32(std)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).contiguous(memory_format=torch.channels_last)


def train_step(model, optimizer, crops, targets, mean, std, opts):
    x = to_tensor(crops, mean, std)
    y = torch.from_numpy(np.ascontiguousarray(targets))[:, None]
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=opts.bf16):
        logits = model(x)
    loss = focal_dice_loss(logits, y, opts.focal_gamma)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach().item()


def cosine_lr(opts, epoch):
    return opts.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * epoch / max(1, opts.epochs))))


# ---------------------------------------------------------------- validation

def validation_views(images, seed):
    """Whole images up to VAL_MAX_PIXELS, else two fixed VAL_CROP crops each: [(image, target, fov)]."""
    rng = np.random.default_rng(seed)
    views = []
    for image, target, fov in images:
        if image.shape[0] * image.shape[1] <= VAL_MAX_PIXELS:
            views.append((image, target, fov))
            continue
        for _ in range(2):
            y = int(rng.integers(0, image.shape[0] - VAL_CROP + 1))
            x = int(rng.integers(0, image.shape[1] - VAL_CROP + 1))
            window = (slice(y, y + VAL_CROP), slice(x, x + VAL_CROP))
            views.append((image[window], target[window], None if fov is None else fov[window]))
    return views


def validate(model, views, mean, std, opts):
    """Mean Dice (inside the field of view) of the stage's prediction on the validation views."""
    model.eval()
    scores = []
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=opts.bf16):
        for image, target, fov in views:
            if opts.stage == "s1":
                prob = stage1(model, image, opts.s1_scale, mean, std)[0][0]
            else:
                prob = run_whole(model, image, mean, std)[0]
            scores.append(dice(prob >= 0.5, target >= 0.5, fov))
    model.train()
    return float(np.mean(scores))


# ---------------------------------------------------------------- checkpoints and the loop

def _checkpoint(model, optimizer, epoch, best, opts, mean, std, seconds):
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
            "best_dice": best, "options": json.dumps(dataclasses.asdict(opts)), "mean": list(mean),
            "std": list(std), "seconds": seconds}


def _save(obj, path):
    with atomic_output(path) as tmp:
        torch.save(obj, tmp)


def _resume(path, model, optimizer):
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    return state["epoch"], state["best_dice"], state["seconds"]


def _log_row(log_path, row):
    new = not log_path.exists()
    with open(log_path, "a", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


def train_stage(spec, opts, out_dir, resume=False, quiet=False):
    """Train one stage on the spec's train split; returns {"best_dice", "epochs", "seconds", ...}."""
    if opts.stage not in STAGES:
        raise InputError(f"stage must be one of {STAGES}, got {opts.stage!r}.")
    stage_dir = Path(out_dir) / opts.stage
    stage_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(opts.seed)
    train_samples, val_samples = split_train_val(spec.split("train"), opts.val_fraction, opts.seed)
    images = load_images(spec, train_samples, 3)
    mean, std = channel_stats(images)
    weights = None
    if opts.stage == "s2" and opts.sampling == "uncertain":
        s1 = load_stage_weights(Path(out_dir) / "s1" / "best.pt", opts.width, opts.depth)
        weights = uncertainty_weights(s1, images, mean, std, opts.s1_scale)
    sampler = CropSampler(opts, images, spec.augment, weights)
    views = validation_views(load_images(spec, val_samples, 3), opts.seed)
    model = UNet(UNetConfig(in_channels=3, out_channels=1, depth=opts.depth, width=opts.width))
    model = model.to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=opts.lr)
    start, best, spent = (_resume(stage_dir / "last.pt", model, optimizer) if resume and (stage_dir / "last.pt").exists()
                          else (0, -1.0, 0.0))
    for epoch in range(start, opts.epochs):
        if opts.max_minutes and spent > 60 * opts.max_minutes:
            break
        t0 = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(opts, epoch)
        rng = np.random.default_rng([opts.seed, epoch])
        losses = []
        bar = tqdm(range(opts.steps_per_epoch), desc=f"{opts.stage} epoch {epoch + 1}/{opts.epochs}",
                   disable=quiet or None, leave=False)
        for _ in bar:
            losses.append(train_step(model, optimizer, *sampler.batch(rng), mean, std, opts))
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
        val_dice = validate(model, views, mean, std, opts)
        spent += time.perf_counter() - t0
        if val_dice > best:
            best = val_dice
            _save({"model": model.state_dict(), "epoch": epoch + 1, "val_dice": val_dice}, stage_dir / "best.pt")
        _save(_checkpoint(model, optimizer, epoch + 1, best, opts, mean, std, spent), stage_dir / "last.pt")
        row = {"epoch": epoch + 1, "lr": round(cosine_lr(opts, epoch), 6), "loss": round(float(np.mean(losses)), 5),
               "val_dice": round(val_dice, 5), "best_dice": round(best, 5), "seconds": round(spent, 1)}
        _log_row(stage_dir / "log.csv", row)
        if not quiet:
            print(f"{opts.stage} epoch {epoch + 1}: loss {row['loss']:.4f} val Dice {val_dice:.4f} "
                  f"(best {best:.4f}) {spent / 60:.1f} min", flush=True)
    summary = {"stage": opts.stage, "best_val_dice": best, "seconds": round(spent, 1), "mean": mean, "std": std,
               "options": dataclasses.asdict(opts), "train_ids": [s.id for s in train_samples],
               "val_ids": [s.id for s in val_samples]}
    (stage_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def load_stage_weights(path, width, depth):
    """A U-Net with the best weights of a stage's run folder."""
    if not Path(path).is_file():
        raise InputError(f"{path} does not exist; train stage 1 first (iterseg train --stage s1).")
    model = UNet(UNetConfig(in_channels=3, out_channels=1, depth=depth, width=width))
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True)["model"])
    return model.eval()


def assemble_bundle(spec, out_dir, name, command=None):
    """Write ``out_dir/<name>.pt`` from the best S1 and S2 weights of a run folder; returns its path."""
    out_dir = Path(out_dir)
    summaries = {}
    for stage in STAGES:
        path = out_dir / stage / "summary.json"
        if not path.is_file():
            raise InputError(f"{path} does not exist; train stage {stage} first.")
        summaries[stage] = json.loads(path.read_text(encoding="utf-8"))
    models = {stage: load_stage_weights(out_dir / stage / "best.pt", summaries[stage]["options"]["width"],
                                        summaries[stage]["options"]["depth"]) for stage in STAGES}
    provenance = {"dataset": spec.name, "spec": spec.path.name, "split": spec.split_rule.get("by") or "recorded test list",
                  "iterseg": __version__, "torch": torch.__version__, "command": command,
                  "created": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                  "stages": {stage: {k: summaries[stage][k] for k in ("best_val_dice", "seconds", "options", "val_ids")}
                             for stage in STAGES}}
    bundle = Bundle(s1=models["s1"], s2=models["s2"], mean=tuple(summaries["s2"]["mean"]),
                    std=tuple(summaries["s2"]["std"]), s1_scale=summaries["s1"]["options"]["s1_scale"],
                    name=name, provenance=provenance)
    path = out_dir / f"{name}.pt"
    save_bundle(bundle, path, half=True)
    return path
