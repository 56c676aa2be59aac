"""Training S1 and S2 the way the method prescribes, and assembling them into a bundle.

S1 learns on images downscaled by ``s1_scale`` (with up to +5 % scale jitter) and random crops; S2
on random full-resolution crops whose sizes cover the windows ``predict`` will use, so that one S2
serves every N_p. Loss = focal + (1 - soft Dice); Adam with cosine decay; flips and 90-degree
rotations as the spec allows; bf16 autocast with channels_last on CPU. Each epoch ends with the
validation Dice (held-out training images, inside the field of view); the best weights are kept.

A multi-class spec (K classes) trains networks with K softmax outputs on cross-entropy + (1 - mean
soft Dice over the classes); its targets are one-hot, all zero at unlabelled pixels, which then
count in no loss.

Glossary
    image    uint8/uint16 (H, W, C) as read; target: float32 (H, W) in [0, 1] (binary; soft after
             resizing) or float32 (H, W, K) one-hot (multi-class; soft after resizing)
    batch    float32 (N, C, h, w) normalised crops; logits (N, K', h, w) stay inside this module
             (K' = 1 for a binary model, K otherwise)
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
from .disk.outputs import atomic_output
from .errors import InputError
from .infer import run_whole
from .metrics import class_ious, dice, mean_iou
from .model.bundle import Bundle
from .model.store import load_bundle, save_bundle
from .model.unet import UNet, UNetConfig
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
    condition: bool = False          # S2 also sees the stage-1 probabilities (a conditioned S2)
    init_from: str | None = None     # S2 only: a bundle whose S1 is used and whose S2 starts the training


# ---------------------------------------------------------------- data

def split_train_val(samples, fraction, seed):
    """(train, validation) samples: a seeded ``fraction`` (at least one) held out for validation."""
    rng = np.random.default_rng(seed)
    n_val = max(1, round(fraction * len(samples))) if len(samples) > 1 else 0
    held = set(rng.choice(len(samples), n_val, replace=False).tolist())
    return [s for i, s in enumerate(samples) if i not in held], [s for i, s in enumerate(samples) if i in held]


def output_channels(spec):
    """Network outputs K' for a spec: 1 (sigmoid) for binary, K (softmax) for multi-class."""
    return spec.num_classes if spec.multiclass else 1


def training_target(spec, target, fov):
    """float32 (H, W) foreground (binary) or (H, W, K) one-hot, zero outside ``fov`` (multi-class)."""
    if not spec.multiclass:
        return target.astype(np.float32)
    one_hot = np.eye(spec.num_classes, dtype=np.float32)[target]
    if fov is not None:
        one_hot[~fov] = 0
    return one_hot


def load_images(spec, samples, channels):
    """[(float32 image (H, W, C) in [0, 1], target (see training_target), fov bool or None)] for samples."""
    loaded = []
    for sample in samples:
        image, target, fov = read_sample(spec, sample)
        loaded.append((as_float_image(image, channels)[0], training_target(spec, target, fov), fov))
    return loaded


def resize_target(target, height, width):
    """A (H, W) or (H, W, K) target resized with INTER_AREA (soft values), same number of axes."""
    planes = target if target.ndim == 3 else target[:, :, None]
    out = resize(np.ascontiguousarray(planes), height, width, cv2.INTER_AREA)
    return out if target.ndim == 3 else out[:, :, 0]


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
            per_scale.append((resize(image, h, w, cv2.INTER_AREA), resize_target(target, h, w)))
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
    """Per training image, a sampling distribution over the stage-1 grid ∝ 1 - margin + floor
    (margin: |2p - 1| for a binary model, top-1 minus top-2 probability otherwise)."""
    weights = []
    for image, _, _ in images:
        small = resize(image, max(1, round(image.shape[0] * scale)), max(1, round(image.shape[1] * scale)), cv2.INTER_AREA)
        probs = run_whole(s1_model, small, mean, std).astype(np.float64)
        if len(probs) == 1:
            margin = np.abs(2.0 * probs[0] - 1.0)
        else:
            top = np.sort(probs, axis=0)
            margin = top[-1] - top[-2]
        w = 1.0 - margin + floor
        weights.append(w / w.sum())
    return weights


def with_stage1(s1_model, images, mean, std, scale):
    """Each image with its stage-1 probabilities (upsampled, as ``predict`` computes them) appended
    as channels: [(float32 (H, W, C + K), target, fov)], the input of a conditioned S2."""
    out = []
    for image, target, fov in images:
        probs = stage1(s1_model, image, scale, mean, std)[0]
        out.append((np.concatenate([image, probs.transpose(1, 2, 0)], axis=2), target, fov))
    return out


def load_start_state(model, state):
    """Load a starting S2's ``state`` into ``model``. Where ``model``'s first convolution takes more
    input channels (a conditioned S2 started from an unconditioned one), the new inputs' weights start
    at zero, so training starts from the same output."""
    key = "inc.0.weight"
    weight = state[key]
    inputs = model.state_dict()[key].shape[1]
    padded = torch.zeros(weight.shape[0], inputs, *weight.shape[2:], dtype=weight.dtype)
    padded[:, :weight.shape[1]] = weight
    model.load_state_dict({**state, key: padded})
    return model


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


def multiclass_loss(logits, target):
    """Cross-entropy on labelled pixels + (1 - mean soft Dice over classes). target: (N, K, h, w)
    one-hot or soft, all zero at unlabelled pixels."""
    logits = logits.float()
    labelled = target.sum(1)
    ce = -(target * torch.log_softmax(logits, dim=1)).sum(1)
    ce = ce.sum() / labelled.sum().clamp(min=1)
    prob = torch.softmax(logits, dim=1) * labelled[:, None]
    dims = (0, 2, 3)
    soft_dice = (2 * (prob * target).sum(dims) + 1) / (prob.sum(dims) + target.sum(dims) + 1)
    return ce + (1 - soft_dice.mean())


def target_tensor(targets):
    """(N, h, w) binary targets -> (N, 1, h, w); (N, h, w, K) one-hot -> (N, K, h, w)."""
    y = torch.from_numpy(np.ascontiguousarray(targets))
    return y[:, None] if y.ndim == 3 else y.permute(0, 3, 1, 2).contiguous()


def to_tensor(crops, mean, std):
    """(N, h, w, C) float32 in [0, 1] -> normalised (N, C, h, w) in channels_last memory format."""
    x = (crops - np.float32(mean)) / np.float32(std)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).contiguous(memory_format=torch.channels_last)


def train_step(model, optimizer, crops, targets, mean, std, opts):
    x = to_tensor(crops, mean, std)
    y = target_tensor(targets)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=opts.bf16):
        logits = model(x)
    loss = focal_dice_loss(logits, y, opts.focal_gamma) if y.shape[1] == 1 else multiclass_loss(logits, y)
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
    """Mean Dice (binary) or mean IoU over classes (multi-class), inside the field of view, of the
    stage's prediction on the validation views."""
    model.eval()
    scores = []
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=opts.bf16):
        for image, target, fov in views:
            if opts.stage == "s1":
                probs = stage1(model, image, opts.s1_scale, mean, std)[0]
            else:
                probs = run_whole(model, image, mean, std)
            if len(probs) == 1:
                scores.append(dice(probs[0] >= 0.5, target >= 0.5, fov))
            else:
                num_classes = len(probs)
                scores.append(mean_iou(class_ious(probs.argmax(0), target.argmax(2), num_classes, target.sum(2) > 0)))
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


def stage2_start(spec, opts, out_dir):
    """(S1 network, its mean, std, the S2 initial state dict or None) for training S2: S1 from
    ``opts.init_from`` (a bundle) or from ``out_dir/s1``; mean/std None = computed from the images."""
    if opts.init_from:
        bundle = load_bundle(opts.init_from).unconditioned()  # a conditioned bundle: its reference S2, if any
        if bundle.conditioned and not opts.condition:
            raise InputError(f"--init-from {opts.init_from}: its S2 is conditioned and it keeps no unconditioned "
                             "reference network to start from; add --condition to fine-tune its conditioned S2, "
                             "or pass an unconditioned bundle.")
        config = bundle.s2.config
        if (config.width, config.depth, config.out_channels) != (opts.width, opts.depth, output_channels(spec)):
            raise InputError(f"--init-from {opts.init_from}: its S2 has width {config.width}, depth {config.depth} and "
                             f"{config.out_channels} outputs; pass the same --width and --depth, and a spec with its classes.")
        return bundle.s1, bundle.mean, bundle.std, bundle.s2.state_dict()
    if opts.condition or opts.sampling == "uncertain":
        s1 = load_stage_weights(Path(out_dir) / "s1" / "best.pt", opts.width, opts.depth,
                                out_channels=output_channels(spec))
        return s1, None, None, None
    return None, None, None, None


@dataclass
class StageData:
    """What one stage trains on: images (float32 (H, W, C'), C' = 3, plus K' stage-1 channels for a
    conditioned S2) with targets and fov; the normalisation of the image channels (the bundle's) and of
    the network's inputs; S2 crop-centre weights (or None); S2's initial state (or None)."""
    images: list
    val_images: list
    image_norm: tuple
    input_norm: tuple
    crop_weights: list | None = None
    init_state: dict | None = None


def stage_data(spec, opts, out_dir, train_samples, val_samples):
    """Load and prepare a stage's images (see StageData)."""
    images = load_images(spec, train_samples, 3)
    val_images = load_images(spec, val_samples, 3)
    s1, mean, std, init_state = stage2_start(spec, opts, out_dir) if opts.stage == "s2" else (None,) * 4
    if mean is None:
        mean, std = channel_stats(images)
    weights = None
    if opts.sampling == "uncertain" and opts.stage == "s2":
        weights = uncertainty_weights(s1, images, mean, std, opts.s1_scale)
    input_norm = (tuple(mean), tuple(std))
    if opts.condition:
        images = with_stage1(s1, images, mean, std, opts.s1_scale)
        val_images = with_stage1(s1, val_images, mean, std, opts.s1_scale)
        extra = (0.5,) * s1.config.out_channels
        input_norm = (tuple(mean) + extra, tuple(std) + extra)
    return StageData(images, val_images, (tuple(mean), tuple(std)), input_norm, weights, init_state)


def train_stage(spec, opts, out_dir, resume=False, quiet=False):
    """Train one stage on the spec's train split; returns {"best_dice", "epochs", "seconds", ...}."""
    if opts.stage not in STAGES:
        raise InputError(f"stage must be one of {STAGES}, got {opts.stage!r}.")
    if opts.stage == "s1" and (opts.condition or opts.init_from):
        raise InputError("--condition and --init-from apply to stage 2 only (--stage s2).")
    stage_dir = Path(out_dir) / opts.stage
    stage_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(opts.seed)
    train_samples, val_samples = split_train_val(spec.split("train"), opts.val_fraction, opts.seed)
    data = stage_data(spec, opts, out_dir, train_samples, val_samples)
    sampler = CropSampler(opts, data.images, spec.augment, data.crop_weights)
    views = validation_views(data.val_images, opts.seed)
    net_mean, net_std = data.input_norm
    mean, std = data.image_norm
    model = UNet(UNetConfig(in_channels=len(net_mean), out_channels=output_channels(spec), depth=opts.depth,
                            width=opts.width))
    if data.init_state is not None:
        load_start_state(model, data.init_state)
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
            losses.append(train_step(model, optimizer, *sampler.batch(rng), net_mean, net_std, opts))
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
        val_dice = validate(model, views, net_mean, net_std, opts)
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
    summary = {"stage": opts.stage, "best_val_dice": best, "out_channels": output_channels(spec),
               "seconds": round(spent, 1), "mean": mean, "std": std, "options": dataclasses.asdict(opts),
               "train_ids": [s.id for s in train_samples],
               "val_ids": [s.id for s in val_samples]}
    (stage_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def load_stage_weights(path, width, depth, in_channels=3, out_channels=1):
    """A U-Net with the best weights of a stage's run folder."""
    if not Path(path).is_file():
        raise InputError(f"{path} does not exist; train stage 1 first (iterseg train --stage s1).")
    model = UNet(UNetConfig(in_channels=in_channels, out_channels=out_channels, depth=depth, width=width))
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True)["model"])
    return model.eval()


def assemble_bundle(spec, out_dir, name, command=None):
    """Write ``out_dir/<name>.pt`` from the best weights of a run folder; returns its path.

    S2 trained with ``init_from`` takes S1 (and mean/std) from that bundle; a conditioned S2 started
    from an unconditioned one keeps that as the reference network of the baseline (one fine-tuned
    from a conditioned S2 without a reference has none). Otherwise both stages come from the run folder."""
    out_dir = Path(out_dir)
    s2_summary = _summary(out_dir, "s2")
    s2_opts = s2_summary["options"]
    outputs = s2_summary.get("out_channels", 1)
    s2 = load_stage_weights(out_dir / "s2" / "best.pt", s2_opts["width"], s2_opts["depth"],
                            3 + (outputs if s2_opts.get("condition") else 0), outputs)
    reference = None
    stages = {"s2": s2_summary}
    if s2_opts.get("init_from"):
        start = load_bundle(s2_opts["init_from"]).unconditioned()
        s1, mean, std, scale = start.s1, start.mean, start.std, start.s1_scale
        reference = start.s2 if s2_opts.get("condition") and not start.conditioned else None
        stages["s1"] = {"from_bundle": s2_opts["init_from"], **start.provenance.get("stages", {}).get("s1", {})}
    else:
        stages["s1"] = _summary(out_dir, "s1")
        s1_opts = stages["s1"]["options"]
        s1 = load_stage_weights(out_dir / "s1" / "best.pt", s1_opts["width"], s1_opts["depth"], 3, outputs)
        mean, std, scale = tuple(s2_summary["mean"]), tuple(s2_summary["std"]), s1_opts["s1_scale"]
    provenance = {"dataset": spec.name, "spec": spec.path.name, "split": spec.split_rule.get("by") or "recorded test list",
                  "iterseg": __version__, "torch": torch.__version__, "command": command,
                  "created": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                  "stages": {stage: {k: v for k, v in summary.items() if k in
                                     ("best_val_dice", "seconds", "options", "val_ids", "from_bundle")}
                             for stage, summary in stages.items()}}
    bundle = Bundle(s1=s1, s2=s2, mean=tuple(mean), std=tuple(std), s1_scale=scale, name=name,
                    provenance=provenance, reference=reference, class_names=spec.class_names, palette=spec.palette)
    path = out_dir / f"{name}.pt"
    save_bundle(bundle, path, half=True)
    return path


def _summary(out_dir, stage):
    path = Path(out_dir) / stage / "summary.json"
    if not path.is_file():
        raise InputError(f"{path} does not exist; train stage {stage} first.")
    return json.loads(path.read_text(encoding="utf-8"))
