"""Training S1 or S2 the way the method prescribes: the data a stage trains on, the steps, the
validation and the checkpoints.

Loss = focal + (1 - soft Dice) (binary) or cross-entropy + (1 - mean soft Dice) (multi-class, see
losses.py); Adam with cosine decay; flips and 90-degree rotations as the spec allows; channels_last,
in the precision ``auto`` picks for the CPU (bf16 autocast where it has bf16 units, else fp32). Each
epoch ends with the validation score (Dice, or mIoU for a multi-class spec) of held-out training
images, inside the field of view; the best weights are kept. A conditioned S2 trains on the images
with the stage-1 probabilities appended, built as predict builds them (engine/refine.s2_input).

Glossary
    image    float32 (H, W, C') in [0, 1] (C' = 3, plus K' stage-1 channels for a conditioned S2)
    target   float32 (H, W) foreground in [0, 1] (binary) or (H, W, K) one-hot, all zero at unlabelled
             pixels (multi-class)
    fov      bool (H, W) pixels that count in validation, or None for all
    probs    float32 (K', H, W) probabilities (never logits); K' = 1 for a binary model, K otherwise
    batch    float32 (N, C', h, w) normalised crops; the logits (N, K', h, w) go only to losses.py
Files in ``out/<stage>/``: ``last.pt`` (resumable checkpoint), ``best.pt`` (best weights), ``log.csv``,
``summary.json``.
"""
import csv
import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..disk.outputs import atomic_output
from ..engine.infer import run_whole
from ..engine.refine import s2_input
from ..engine.source import ArraySource, gather_boxes
from ..errors import InputError
from ..model.runtime import Runner, check_precision, warn_if_emulated
from ..model.store import load_bundle
from ..model.unet import UNet, UNetConfig
from .assemble import load_stage_weights
from .data import read_sample
from .losses import stage_loss
from .metrics import class_ious, dice, mean_iou
from .sampling import CropSampler, coarse_map, uncertainty_weights
from .scale import FULL_WIDTH, choose_s1_scale, s1_width

STAGES = ("s1", "s2")
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
    precision: str = "auto"          # auto | fp32 | bf16 (model/runtime.py; auto: bf16 only with bf16 units)
    width: int | None = None         # None: 16, and for stage 1 scale.s1_width(s1_scale)
    depth: int = 4
    s1_scale: float | None = None    # None: stage 1's from its training masks (scale.py); stage 2 takes S1's
    val_fraction: float = 0.15
    sampling: str = "uniform"        # S2 crop centres: uniform, or "uncertain" (in proportion to S1 uncertainty)
    max_minutes: float | None = None
    focal_gamma: float = 2.0
    condition: bool = False          # S2 also sees the stage-1 probabilities (a conditioned S2)
    init_from: str | None = None     # S2 only: a bundle whose S1 is used and whose S2 starts the training


def train_precision(opts):
    """The concrete precision ('fp32' or 'bf16', a runtime.Choice) a stage trains in:
    ``opts.precision`` with 'auto' resolved for this CPU."""
    precision = check_precision(opts.precision)
    if precision == "int8":
        raise InputError("training runs in auto, fp32 or bf16, not int8; make an int8 bundle with `iterseg quantize`.")
    return precision


# ---------------------------------------------------------------- loading images

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
    """float32 (H, W) foreground (binary) or (H, W, K) one-hot, zero outside ``fov`` (multi-class),
    from a spec's target (bool (H, W) or uint8 class ids)."""
    if not spec.multiclass:
        return target.astype(np.float32)
    one_hot = np.eye(spec.num_classes, dtype=np.float32)[target]
    if fov is not None:
        one_hot[~fov] = 0
    return one_hot


def load_images(spec, samples, channels):
    """[(image float32 (H, W, channels) in [0, 1], target (see training_target), fov or None)]."""
    loaded = []
    for sample in samples:
        image, target, fov = read_sample(spec, sample)
        loaded.append((ArraySource(image, channels).unit, training_target(spec, target, fov), fov))
    return loaded


def channel_stats(images):
    """Per-channel mean and std over all training pixels (the bundle's normalisation)."""
    total = sum(im.reshape(-1, im.shape[2]).astype(np.float64).sum(0) for im, _, _ in images)
    count = sum(im.shape[0] * im.shape[1] for im, _, _ in images)
    mean = total / count
    sq = sum(((im.reshape(-1, im.shape[2]) - mean) ** 2).sum(0) for im, _, _ in images)
    return tuple(float(m) for m in mean), tuple(float(max(s, 1e-3)) for s in np.sqrt(sq / count))


def with_stage1(s1_model, images, mean, std, scale):
    """Each image with its stage-1 probabilities (upsampled, as ``predict`` computes them) appended
    as channels: [(float32 (H, W, C + K'), target, fov)], the input of a conditioned S2."""
    out = []
    for image, target, fov in images:
        probs = coarse_map(s1_model, image, scale, mean, std).full()
        out.append((s2_input(image[None], probs.transpose(1, 2, 0)[None])[0], target, fov))
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


def stage2_start(spec, opts, out_dir):
    """(S1 network, its mean, std, the S2 initial state dict or None) for training S2: S1 from
    ``opts.init_from`` (a bundle) or from ``out_dir/s1``; mean/std None = computed from the images."""
    if opts.init_from:
        return _start_from_bundle(spec, opts)
    if opts.condition or opts.sampling == "uncertain":
        s1_opts = stage1_options(out_dir)
        s1 = load_stage_weights(Path(out_dir) / "s1" / "best.pt", s1_opts["width"], s1_opts["depth"],
                                out_channels=output_channels(spec))
        return s1, None, None, None
    return None, None, None, None


def stage1_options(out_dir):
    """The options stage 1 of a run folder was trained with (its summary.json); InputError without one."""
    path = Path(out_dir) / "s1" / "summary.json"
    if not path.is_file():
        raise InputError(f"{path} does not exist; train stage 1 first (iterseg train --stage s1).")
    return json.loads(path.read_text(encoding="utf-8"))["options"]


def settled(opts, out_dir, images):
    """``opts`` with stage 1's scale and the width decided where they were left out (None): stage 1
    from its training masks (scale.py); stage 2 takes the scale of the stage 1 it works with (the
    ``init_from`` bundle's or the run folder's) and the width of the S2 it starts from, else 16."""
    scale, width = opts.s1_scale, opts.width
    if opts.stage == "s1":
        scale = scale or choose_s1_scale([target for _, target, _ in images])
        return dataclasses.replace(opts, s1_scale=scale, width=width or s1_width(scale))
    start = load_bundle(opts.init_from).unconditioned() if opts.init_from else None
    if scale is None:
        has_s1 = (Path(out_dir) / "s1" / "summary.json").is_file()
        scale = start.s1_scale if start else stage1_options(out_dir)["s1_scale"] if has_s1 else None
    return dataclasses.replace(opts, s1_scale=scale, width=width or (start.s2.config.width if start else FULL_WIDTH))


def s2_partner(init_from):
    """The bundle whose S2 a new S1 (``--stage s1 --init-from``) will work with; InputError if its S2
    is conditioned on its own stage 1 (it would see another S1's probabilities) and keeps no
    unconditioned reference."""
    bundle = load_bundle(init_from).unconditioned()
    if bundle.conditioned:
        raise InputError(f"--init-from {init_from}: its S2 is conditioned on the bundle's own stage 1, so it "
                         "cannot work with a new one; pass the unconditioned bundle it was fine-tuned from.")
    return bundle


def _start_from_bundle(spec, opts):
    """``stage2_start`` from the bundle ``opts.init_from``, checked against the options."""
    bundle = load_bundle(opts.init_from).unconditioned()  # a conditioned bundle: its reference S2, if any
    if bundle.conditioned and not opts.condition:
        raise InputError(f"--init-from {opts.init_from}: its S2 is conditioned and it keeps no unconditioned "
                         "reference network to start from; add --condition to fine-tune its conditioned S2, "
                         "or pass an unconditioned bundle.")
    config = bundle.s2.config
    if (config.width, config.depth, config.out_channels) != (opts.width or config.width, opts.depth,
                                                             output_channels(spec)):
        raise InputError(f"--init-from {opts.init_from}: its S2 has width {config.width}, depth {config.depth} "
                         f"and {config.out_channels} outputs; pass the same --width and --depth, and a spec with "
                         "its classes.")
    return bundle.s1, bundle.mean, bundle.std, bundle.s2.state_dict()


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
    if opts.stage == "s1" and opts.init_from:  # a new S1 for that bundle's S2: its normalisation
        partner = s2_partner(opts.init_from)
        mean, std = partner.mean, partner.std
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


# ---------------------------------------------------------------- steps

def target_tensor(targets):
    """(N, h, w) binary targets -> (N, 1, h, w); (N, h, w, K) one-hot -> (N, K, h, w)."""
    y = torch.from_numpy(np.ascontiguousarray(targets))
    return y[:, None] if y.ndim == 3 else y.permute(0, 3, 1, 2).contiguous()


def to_tensor(crops, mean, std):
    """(N, h, w, C) float32 in [0, 1] -> normalised (N, C, h, w) in channels_last memory format."""
    x = (crops - np.float32(mean)) / np.float32(std)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).contiguous(memory_format=torch.channels_last)


def train_step(model, optimizer, crops, targets, mean, std, opts):
    """One optimiser step on crops (N, h, w, C) in [0, 1] and their targets; returns the loss."""
    x = to_tensor(crops, mean, std)
    y = target_tensor(targets)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=train_precision(opts) == "bf16"):
        logits = model(x)
    loss = stage_loss(logits, y, opts.focal_gamma)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach().item()


def cosine_lr(opts, done):
    """Learning rate after ``done`` of the training (a fraction in [0, 1]): cosine decay from
    ``opts.lr`` to 5 % of it."""
    return opts.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, done))))


class Schedule:
    """Where a stage stands: by epochs, or, with ``opts.max_minutes``, by the training time spent
    (the cosine then spans the time budget, and steps stop when it is spent, inside an epoch too)."""

    def __init__(self, opts, spent):
        self.opts = opts
        self.budget = 60 * opts.max_minutes if opts.max_minutes else None
        self.spent = spent
        self._since = None

    def start(self):
        self._since = time.perf_counter()

    def stop(self):
        self.spent += time.perf_counter() - self._since

    def now(self):
        return self.spent + time.perf_counter() - self._since

    def done(self, epoch, step=0):
        """The fraction of the training done before ``step`` of ``epoch``."""
        if self.budget:
            return self.now() / self.budget
        return epoch / max(1, self.opts.epochs)

    def over(self):
        return self.budget is not None and self.now() >= self.budget


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
            crop = (slice(y, y + VAL_CROP), slice(x, x + VAL_CROP))
            views.append((image[crop], target[crop], None if fov is None else fov[crop]))
    return views


def stage_probs(model, image, mean, std, opts):
    """The stage's probabilities (K', H, W) on a whole image: S1 at stage-1 scale, upsampled; S2
    at full resolution (on the image's C' channels). model: a network or Runner returning logits."""
    if opts.stage == "s1":
        return coarse_map(model, image, opts.s1_scale, mean, std).full()
    return run_whole(model, lambda boxes: gather_boxes(image, boxes), image.shape[:2], mean, std)[0]


def view_score(probs, target, fov):
    """Dice of the foreground (K' = 1, inside ``fov``) or mean IoU over the labelled pixels' classes."""
    if len(probs) == 1:
        return dice(probs[0] >= 0.5, target >= 0.5, fov)
    return mean_iou(class_ious(probs.argmax(0), target.argmax(2), len(probs), target.sum(2) > 0))


def validate(model, views, mean, std, opts):
    """Mean Dice (binary) or mean IoU over classes (multi-class), inside the field of view, of the
    stage's prediction on the validation views (in the training precision, as model/runtime runs it)."""
    model.eval()
    runner = Runner(model, train_precision(opts))
    scores = [view_score(stage_probs(runner, image, mean, std, opts), target, fov) for image, target, fov in views]
    model.train()
    return float(np.mean(scores))


# ---------------------------------------------------------------- checkpoints

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


# ---------------------------------------------------------------- the loop

def _check_options(opts):
    if opts.stage not in STAGES:
        raise InputError(f"stage must be one of {STAGES}, got {opts.stage!r}.")
    if opts.s1_scale is not None and not 0 < opts.s1_scale <= 1:
        raise InputError(f"s1_scale must be in (0, 1], got {opts.s1_scale}.")
    if opts.stage == "s1" and opts.condition:
        raise InputError("--condition applies to stage 2 only (--stage s2).")
    warn_if_emulated(train_precision(opts))  # and InputError for int8, before any work


def _new_model(spec, opts, data):
    """The stage's U-Net (channels_last, train mode), started from ``data.init_state`` if any."""
    model = UNet(UNetConfig(in_channels=len(data.input_norm[0]), out_channels=output_channels(spec),
                            depth=opts.depth, width=opts.width))
    if data.init_state is not None:
        load_start_state(model, data.init_state)
    return model.to(memory_format=torch.channels_last).train()


def _epoch(model, optimizer, sampler, data, opts, epoch, schedule, quiet):
    """Train one epoch (cut short when the time budget is spent); returns (mean loss, last lr)."""
    rng = np.random.default_rng([opts.seed, epoch])
    losses, lr = [], opts.lr
    total = "" if schedule.budget else f"/{opts.epochs}"
    bar = tqdm(range(opts.steps_per_epoch), desc=f"{opts.stage} epoch {epoch + 1}{total}", disable=quiet or None,
               leave=False)
    for step in bar:
        if schedule.over():
            break
        lr = cosine_lr(opts, schedule.done(epoch, step))
        for group in optimizer.param_groups:
            group["lr"] = lr
        losses.append(train_step(model, optimizer, *sampler.batch(rng), *data.input_norm, opts))
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
    return float(np.mean(losses)) if losses else float("nan"), lr


def train_stage(spec, opts, out_dir, resume=False, quiet=False):
    """Train one stage on the spec's train split; returns {"best_val_dice", "seconds", "options", ...}
    (also written to ``out_dir/<stage>/summary.json``)."""
    _check_options(opts)
    stage_dir = Path(out_dir) / opts.stage
    stage_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(opts.seed)
    train_samples, val_samples = split_train_val(spec.split("train"), opts.val_fraction, opts.seed)
    opts = settled(opts, out_dir, []) if opts.stage == "s2" else opts  # stage_data needs S1's scale
    data = stage_data(spec, opts, out_dir, train_samples, val_samples)
    opts = settled(opts, out_dir, data.images)
    sampler = CropSampler(opts, data.images, spec.augment, data.crop_weights)
    views = validation_views(data.val_images, opts.seed)
    torch.manual_seed(opts.seed)  # the initial weights do not depend on what preparing the data drew
    model = _new_model(spec, opts, data)
    optimizer = torch.optim.Adam(model.parameters(), lr=opts.lr)
    last = stage_dir / "last.pt"
    start, best, spent = _resume(last, model, optimizer) if resume and last.exists() else (0, -1.0, 0.0)
    schedule = Schedule(opts, spent)
    epoch = start
    while (epoch < opts.epochs) if schedule.budget is None else schedule.spent < schedule.budget:
        schedule.start()
        loss, lr = _epoch(model, optimizer, sampler, data, opts, epoch, schedule, quiet)
        val_dice = validate(model, views, *data.input_norm, opts)
        schedule.stop()
        spent = schedule.spent
        if val_dice > best:
            best = val_dice
            _save({"model": model.state_dict(), "epoch": epoch + 1, "val_dice": val_dice}, stage_dir / "best.pt")
        _save(_checkpoint(model, optimizer, epoch + 1, best, opts, *data.image_norm, spent), stage_dir / "last.pt")
        _end_epoch(stage_dir, opts, epoch, lr, loss, val_dice, best, spent, quiet)
        epoch += 1
    return _write_summary(stage_dir, spec, opts, data, best, spent, train_samples, val_samples)


def _end_epoch(stage_dir, opts, epoch, lr, loss, val_dice, best, spent, quiet):
    """Log an epoch to ``log.csv`` and, unless quiet, print it."""
    row = {"epoch": epoch + 1, "lr": round(lr, 6), "loss": round(loss, 5),
           "val_dice": round(val_dice, 5), "best_dice": round(best, 5), "seconds": round(spent, 1)}
    _log_row(stage_dir / "log.csv", row)
    if not quiet:
        print(f"{opts.stage} epoch {epoch + 1}: loss {row['loss']:.4f} val Dice {val_dice:.4f} "
              f"(best {best:.4f}) {spent / 60:.1f} min", flush=True)


def _write_summary(stage_dir, spec, opts, data, best, spent, train_samples, val_samples):
    mean, std = data.image_norm
    shape = np.median([image.shape[:2] for image, _, _ in data.images], axis=0) if data.images else (0, 0)
    summary = {"stage": opts.stage, "best_val_dice": best, "out_channels": output_channels(spec),
               "seconds": round(spent, 1), "mean": mean, "std": std, "options": dataclasses.asdict(opts),
               "image_shape": [int(side) for side in shape],
               "train_ids": [s.id for s in train_samples],
               "val_ids": [s.id for s in val_samples]}
    (stage_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary
