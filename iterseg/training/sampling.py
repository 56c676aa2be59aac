"""What a training step sees: random crops of the training images, augmented, and the stage-1
probabilities of those images (to condition S2 on, or to draw S2's crop centres where S1 is unsure).

S1 learns on images downscaled by ``s1_scale`` (INTER_AREA, as predict shrinks them) at every
S1_JITTER scale (up to +5 %), S2 on full-resolution crops whose sides cover the windows predict
will use, so that one S2 serves every N_p. Batches of smaller crops hold more of them, so that a
batch keeps about ``batch_size * crop ** 2`` pixels.

Glossary
    image    float32 (H, W, C) in [0, 1] (an engine source's ``unit``); C = 3, or 3 + K' for a
             conditioned S2 (the stage-1 probabilities appended, see loop.with_stage1)
    target   float32 (H, W) foreground in [0, 1] (binary) or (H, W, K) one-hot (multi-class); soft
             after resizing, all zero at unlabelled pixels
    probs    float32 (K', h, w) stage-1 probabilities (never logits): K' = 1 (the foreground of a
             binary model) or K (softmax over classes)
    weights  float64 (h1, w1) a distribution over the stage-1 grid of one image (sums to 1)
    crops    float32 (N, h, w, C) and targets (N, h, w[, K]): one batch
"""
import numpy as np

from ..engine.coarse import stage1
from ..engine.cost import stage1_size
from ..engine.scores import score_plane
from ..engine.source import ArraySource, shrink

S1_JITTER = (1.0, 1.025, 1.05)  # stage-1 training scales, times s1_scale (the paper's +5 %)
MAX_BATCH = 64                   # crops per batch at most, however small they are


def coarse_map(s1_model, image, scale, mean, std):
    """Stage 1 on ``image`` (float32 (H, W, C) in [0, 1]) as predict runs it: an engine CoarseMap,
    whose ``probs`` are (K', h1, w1) at stage-1 scale and ``full()`` (K', H, W) upsampled.
    s1_model returns logits; mean, std: the bundle's normalisation of the image channels."""
    return stage1(ArraySource(image, image.shape[2]), s1_model, scale, mean, std)[0]


def resize_target(target, height, width):
    """A (H, W) or (H, W, K) target resized with INTER_AREA (soft values), same number of axes."""
    planes = target if target.ndim == 3 else target[:, :, None]
    out = shrink(np.ascontiguousarray(planes), height, width)
    return out if target.ndim == 3 else out[:, :, 0]


def s1_views(images, scale):
    """Each (image, target, fov) downscaled (INTER_AREA) at every jitter scale: [[(image, target)]]."""
    views = []
    for image, target, _ in images:
        per_scale = []
        for jitter in S1_JITTER:
            h, w = stage1_size(image.shape[:2], scale * jitter)
            per_scale.append((shrink(image, h, w), resize_target(target, h, w)))
        views.append(per_scale)
    return views


def augment(image, target, rng, rules):
    """Random flips and 90-degree rotations of an image crop and its target, as the spec's
    ``augment`` rules allow (each on by default)."""
    if rules.get("hflip", True) and rng.random() < 0.5:
        image, target = image[:, ::-1], target[:, ::-1]
    if rules.get("vflip", True) and rng.random() < 0.5:
        image, target = image[::-1], target[::-1]
    if rules.get("rotate90", True) and rng.random() < 0.5:
        image, target = np.rot90(image), np.rot90(target)
    return image, target


def crop_at(array, y, x, size):
    """``size`` x ``size`` crop of an (H, W[, ...]) array at (y, x), mirrored where the array is
    smaller than the crop."""
    pad_y, pad_x = max(0, size - array.shape[0]), max(0, size - array.shape[1])
    if pad_y or pad_x:
        widths = ((0, pad_y), (0, pad_x)) + ((0, 0),) * (array.ndim - 2)
        array = np.pad(array, widths, mode="reflect" if min(array.shape[:2]) > 1 else "edge")
    return array[y:y + size, x:x + size]


class CropSampler:
    """Random crops for one stage: S1 from downscaled views, S2 from full-resolution images.

    images: [(image, target, fov)]; centre_weights: None (uniform) or one ``weights`` per image
    (S2 only, see ``uncertainty_weights``)."""

    def __init__(self, opts, images, augment_rules, centre_weights=None):
        self.opts, self.rules, self.weights = opts, augment_rules, centre_weights
        self.images = images if opts.stage == "s2" else None
        self.views = s1_views(images, opts.s1_scale) if opts.stage == "s1" else None
        self.sizes = self._crop_sides(images)

    def _crop_sides(self, images):
        """Crop sides to draw from: multiples of the U-Net's size multiple that fit the images."""
        multiple = 2 ** self.opts.depth
        if self.opts.stage == "s1":
            smallest = min(min(v[0][0].shape[:2]) for v in self.views)
            return (max(multiple, min(self.opts.crop, smallest) // multiple * multiple),)
        smallest = min(min(im.shape[:2]) for im, _, _ in images)
        return tuple(s for s in self.opts.crop_sizes if s <= max(smallest, multiple)) or (multiple,)

    def _centre(self, rng, index, shape, size):
        """(y, x) of a crop of ``size`` in image ``index`` of ``shape``: uniform, or centred on a
        point drawn from the image's centre weights."""
        weights = None if self.weights is None else self.weights[index]
        if weights is None:
            return int(rng.integers(0, max(1, shape[0] - size + 1))), int(rng.integers(0, max(1, shape[1] - size + 1)))
        flat = rng.choice(weights.size, p=weights.ravel())
        cy, cx = divmod(int(flat), weights.shape[1])
        cy = int((cy + rng.random()) * shape[0] / weights.shape[0])
        cx = int((cx + rng.random()) * shape[1] / weights.shape[1])
        return (int(np.clip(cy - size // 2, 0, max(0, shape[0] - size))),
                int(np.clip(cx - size // 2, 0, max(0, shape[1] - size))))

    def _pick(self, rng):
        """(index, image, target): a random training image (S1: at a random jitter scale)."""
        index = int(rng.integers(len(self.views or self.images)))
        if self.views is not None:
            return (index, *self.views[index][int(rng.integers(len(S1_JITTER)))])
        image, target, _ = self.images[index]
        return index, image, target

    def batch(self, rng):
        """(crops float32 (N, h, w, C), targets float32 (N, h, w[, K])); N * h * w about constant."""
        size = int(rng.choice(self.sizes))
        n = max(1, min(MAX_BATCH, round(self.opts.batch_size * (max(self.sizes) / size) ** 2)))
        crops, targets = [], []
        for _ in range(n):
            index, image, target = self._pick(rng)
            y, x = self._centre(rng, index, image.shape, size)
            image, target = augment(crop_at(image, y, x, size), crop_at(target, y, x, size), rng, self.rules)
            crops.append(image)
            targets.append(target)
        return np.stack(crops), np.stack(targets)


def uncertainty_weights(s1_model, images, mean, std, scale, floor=0.05):
    """Per training image (image, target, fov), ``weights`` over its stage-1 grid in proportion to
    S1's uncertainty plus ``floor`` (the engine's 'uncertainty' score plane: 1 - |2p - 1| for a binary
    model, 1 - (top-1 minus top-2 probability) otherwise)."""
    weights = []
    for image, _, _ in images:
        probs = coarse_map(s1_model, image, scale, mean, std).probs
        w = score_plane(probs, "uncertainty").astype(np.float64) + floor
        weights.append(w / w.sum())
    return weights
