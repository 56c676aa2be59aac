"""Dataset specifications (``data_specs/*.yaml``): where images and masks are, and the split.

A spec names images by a glob relative to a data root (``--data-root`` or $ITERSEG_DATA), matches
each image path (relative, no extension) with a regular expression whose named groups fill the
mask and field-of-view templates, and defines the train/test split: by a captured group (DRIVE's
official folders) or by a recorded, seeded list of test ids.

A binary spec names the mask value (or RGB colour) of the foreground; a multi-class spec lists
its classes in class-id order, each with the mask value (gray masks) or RGB colour (colour-coded
masks, as KITTI and street-scene datasets use) that marks it. Mask pixels that match no class are
ignored: left out of training and of every metric.

Glossary
    image    (H, W[, C]) array as read from disk (see disk/images.py)
    target   bool (H, W) foreground of the mask (binary), or uint8 (H, W) class ids (multi-class)
    fov      bool (H, W) pixels to evaluate (field of view, minus ignored pixels), or None for every pixel
"""
import os
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import yaml

from ..disk.images import read_image
from ..errors import InputError

DATA_ROOT_ENV = "ITERSEG_DATA"
SPLITS = ("train", "test")
MAX_LISTED = 5


class SpecError(InputError):
    """A spec file that is malformed, or whose data is missing or inconsistent."""


@dataclass(frozen=True)
class Sample:
    id: str
    image: Path
    mask: Path
    fov: Path | None = None


@dataclass
class Spec:
    name: str
    path: Path
    root: Path
    samples: dict                       # split name -> list of Sample, sorted by id
    foreground: tuple                   # mask value(s) meaning foreground: (v,) or (r, g, b)
    augment: dict = field(default_factory=dict)
    split_rule: dict = field(default_factory=dict)
    classes: tuple = ()                 # multi-class: ((name, value tuple), ...) in class-id order; () = binary
    max_pixels: int | None = None       # refuse image files declaring more pixels (disk/images.check_pixels)
    mpp: float | None = None            # micrometres per pixel of the images, if the spec says (bundles record it)

    @property
    def class_names(self):
        return tuple(name for name, _ in self.classes) if self.classes else ("background", "foreground")

    @property
    def num_classes(self):
        """K: 2 for a binary spec."""
        return len(self.class_names)

    @property
    def multiclass(self):
        return bool(self.classes)

    @property
    def palette(self):
        """RGB colour per class for a colour-coded spec, else None (the default palette applies)."""
        values = [value for _, value in self.classes]
        return tuple(values) if values and all(len(v) == 3 for v in values) else None

    def split(self, name):
        if name == "all":
            return sorted(self.samples["train"] + self.samples["test"], key=lambda s: s.id)
        if name not in self.samples:
            raise SpecError(f"spec {self.name}: unknown split {name!r}; use train, test or all.")
        return self.samples[name]


def builtin_specs():
    """Names of the specs shipped in data_specs/."""
    return sorted(p.name[:-5] for p in resources.files("iterseg.data_specs").iterdir() if p.name.endswith(".yaml"))


def spec_path(name_or_path):
    """A shipped spec by name ('ph2') or a YAML file by path."""
    text = str(name_or_path)
    if text in builtin_specs():
        return Path(str(resources.files("iterseg.data_specs") / f"{text}.yaml"))
    path = Path(text)
    if not path.is_file():
        raise SpecError(f"spec {text!r} is neither a file nor a shipped spec ({', '.join(builtin_specs())}).")
    return path


def data_root(explicit=None):
    """The folder specs are relative to: ``explicit``, else $ITERSEG_DATA."""
    root = explicit or os.environ.get(DATA_ROOT_ENV)
    if not root:
        raise SpecError(f"no data root: pass --data-root DIR or set {DATA_ROOT_ENV} to the folder holding the "
                        "datasets.")
    root = Path(root)
    if not root.is_dir():
        raise SpecError(f"data root {root} is not a folder; pass --data-root DIR or set {DATA_ROOT_ENV}.")
    return root


def seeded_split(ids, seed, test_fraction):
    """Test ids drawn from sorted ``ids`` with numpy's default_rng(seed): round(fraction * n) of them."""
    ids = sorted(ids)
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(ids, round(test_fraction * len(ids)), replace=False).tolist())


def _listing(items):
    items = sorted(items)
    more = f" and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else ""
    return ", ".join(str(i) for i in items[:MAX_LISTED]) + more


MAX_SPEC_BYTES = 1 << 20


class _PlainLoader(yaml.SafeLoader):
    """yaml.SafeLoader without anchors and aliases: a spec never needs them, and aliases nested in
    aliases ("billion laughs") expand to gigabytes from a few lines."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent) or getattr(self.peek_event(), "anchor", None):
            mark = self.peek_event().start_mark
            raise yaml.YAMLError(f"anchors and aliases (& and *) are not allowed in a spec (line {mark.line + 1}); "
                                 "write the values out")
        return super().compose_node(parent, index)


def _read_yaml(path):
    try:
        data = Path(path).read_bytes()
        if len(data) > MAX_SPEC_BYTES:
            raise SpecError(f"spec {path} is {len(data)} bytes; a spec is a short YAML file (under 1 MB).")
        raw = yaml.load(data.decode("utf-8"), Loader=_PlainLoader)  # noqa: S506 - a safe loader, no aliases
    except yaml.YAMLError as exc:
        raise SpecError(f"spec {path} is not valid YAML ({str(exc).splitlines()[0][:200]}).") from None
    except UnicodeDecodeError:
        raise SpecError(f"spec {path} is not UTF-8 text; save it as UTF-8 YAML.") from None
    except RecursionError:
        raise SpecError(f"spec {path} nests too deeply; a spec is a flat mapping (see data_specs/ph2.yaml).") from None
    except OSError as exc:
        raise SpecError(f"cannot read spec {path} ({exc.strerror or exc}); check the path.") from None
    if not isinstance(raw, dict):
        raise SpecError(f"spec {path} is not a YAML mapping of keys (name, images, match, mask, split); "
                        "see data_specs/ph2.yaml for the format.")
    missing = [key for key in ("name", "images", "match", "mask", "split") if key not in raw]
    if missing:
        raise SpecError(f"spec {path} lacks {', '.join(missing)}; see data_specs/ph2.yaml for the format.")
    return _checked(raw, path)


def _relative(value, key, path, template=False):
    """InputError unless ``value`` is a non-empty relative path pattern that stays inside the root."""
    if not isinstance(value, str) or not value.strip():
        raise SpecError(f"spec {path}: '{key}' must be a non-empty path relative to the data root, got {value!r}.")
    parts = Path(value.replace("\\", "/")).parts
    if value.startswith(("/", "~", "\\")) or Path(value).is_absolute() or (parts and ":" in parts[0]) or ".." in parts:
        raise SpecError(f"spec {path}: '{key}' {value!r} must stay inside the data root (relative, no '..'); "
                        "pass the folder above with --data-root instead.")
    if template:
        try:
            value.format_map({})
        except KeyError:
            pass
        except (ValueError, IndexError, AttributeError, TypeError) as exc:
            raise SpecError(f"spec {path}: '{key}' {value!r} is not a valid template ({exc}); use {{name}} "
                            "for the groups 'match' captures.") from None


def _is_scalar_id(value):
    return isinstance(value, (str, int)) and not isinstance(value, bool)


def _checked(raw, path):
    """``raw`` with every field of the expected type (SpecError otherwise); ids as strings."""
    if not isinstance(raw["name"], (str, int)) or isinstance(raw["name"], bool):
        raise SpecError(f"spec {path}: 'name' must be a short text, got {raw['name']!r}.")
    _relative(raw["images"], "images", path)
    for key in ("mask", "fov"):
        if key == "mask" or raw.get(key) is not None:
            _relative(raw[key], key, path, template=True)
    if not isinstance(raw["match"], str):
        raise SpecError(f"spec {path}: 'match' must be a regular expression in quotes, got {raw['match']!r}.")
    try:
        re.compile(raw["match"])
    except (re.error, RecursionError, OverflowError) as exc:
        raise SpecError(f"spec {path}: 'match' is not a valid regular expression ({exc}); fix it.") from None
    split = raw["split"]
    if not isinstance(split, dict):
        raise SpecError(f"spec {path}: 'split' must be a mapping, e.g. {{seed: 0, test_fraction: 0.3}}, "
                        "{test: [id, ...]} or {by: group, train: value, test: value}.")
    split = dict(split)
    if "by" in split:
        if not isinstance(split["by"], str) or not all(_is_scalar_id(split.get(n)) for n in SPLITS):
            raise SpecError(f"spec {path}: a split by group needs 'by: GROUP', 'train: VALUE' and 'test: VALUE'.")
        split.update({n: str(split[n]) for n in SPLITS})
    elif split.get("test") is not None:
        if not isinstance(split["test"], list) or not all(_is_scalar_id(t) for t in split["test"]):
            raise SpecError(f"spec {path}: 'split: test' must list sample ids, e.g. test: [img01, img02].")
        split["test"] = [str(t) for t in split["test"]]
    else:
        seed, fraction = split.get("seed", 0), split.get("test_fraction", 0.3)
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0 or isinstance(fraction, bool) or \
                not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
            raise SpecError(f"spec {path}: a seeded split needs 'seed' (an integer >= 0) and 'test_fraction' "
                            "(a number between 0 and 1).")
    foreground = raw.get("foreground", 255)
    values = foreground if isinstance(foreground, list) else [foreground]
    if len(values) not in (1, 3) or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 65535
                                            for v in values):
        raise SpecError(f"spec {path}: 'foreground' must be a mask value (0-65535) or an RGB colour [r, g, b].")
    if not isinstance(raw.get("augment") or {}, dict) or not isinstance(raw.get("unpaired", ""), (str, type(None))):
        raise SpecError(f"spec {path}: 'augment' must be a mapping and 'unpaired' a word (skip).")
    mpp = raw.get("mpp")
    if mpp is not None and (isinstance(mpp, bool) or not isinstance(mpp, (int, float)) or not 0 < mpp < float("inf")):
        raise SpecError(f"spec {path}: 'mpp' must be the images' micrometres per pixel (a positive number, e.g. "
                        f"0.5), got {mpp!r}.")
    return {**raw, "name": str(raw["name"]), "split": split, "mpp": None if mpp is None else float(mpp)}


def _fill(template, groups, spec_file):
    try:
        return template.format(**groups)
    except KeyError as exc:
        raise SpecError(f"spec {spec_file}: template {template!r} uses {exc}, which 'match' does not "
                        "capture.") from None
    except (ValueError, IndexError, AttributeError, TypeError) as exc:
        raise SpecError(f"spec {spec_file}: template {template!r} cannot be filled ({exc}); use {{name}} for "
                        "the groups 'match' captures.") from None


def _find_samples(raw, root, spec_file):
    pattern = re.compile(raw["match"])
    try:
        images = sorted(p for p in root.glob(raw["images"]) if p.is_file())
    except (ValueError, NotImplementedError, OSError) as exc:
        raise SpecError(f"spec {spec_file}: cannot search {raw['images']!r} under {root} ({exc}).") from None
    if not images:
        raise SpecError(f"spec {spec_file}: no image matches {raw['images']!r} under {root}; check the data root.")
    samples, groups_of, unmatched, unpaired = [], {}, [], []
    for image in images:
        relative = image.relative_to(root).with_suffix("").as_posix()
        found = pattern.fullmatch(relative)
        if not found:
            unmatched.append(relative)
            continue
        groups = {k: v for k, v in found.groupdict().items() if v is not None}
        sample_id = groups.get("id", relative)
        mask = root / _fill(raw["mask"], groups, spec_file)
        fov = root / _fill(raw["fov"], groups, spec_file) if raw.get("fov") else None
        if not mask.is_file():
            unpaired.append(sample_id)
            continue
        if fov is not None and not fov.is_file():
            raise SpecError(f"spec {spec_file}: field-of-view mask {fov} for {sample_id} is missing.")
        if sample_id in groups_of:
            raise SpecError(f"spec {spec_file}: two images have the id {sample_id!r}; make the 'id' group unique.")
        groups_of[sample_id] = groups
        samples.append(Sample(sample_id, image, mask, fov))
    return samples, groups_of, unmatched, unpaired


def _split(raw, samples, groups_of, spec_file):
    rule = raw["split"]
    ids = [s.id for s in samples]
    if "by" in rule:
        group = rule["by"]
        part = {s.id: str(groups_of[s.id].get(group)) for s in samples}
        return {name: [s for s in samples if part[s.id] == rule[name]] for name in SPLITS}, rule
    test = rule.get("test")
    if test is None:
        test = seeded_split(ids, rule.get("seed", 0), rule.get("test_fraction", 0.3))
    unknown = set(test) - set(ids)
    if unknown:
        raise SpecError(f"spec {spec_file}: test ids not found in the data: {_listing(unknown)}.")
    test = set(test)
    return {"train": [s for s in samples if s.id not in test], "test": [s for s in samples if s.id in test]}, rule


def load_spec(name_or_path, root=None, max_pixels=None):
    """Read and validate a spec: every image paired with a mask (unpaired ones are reported, and
    refused unless the spec says ``unpaired: skip``), fields present and of the right types, paths
    inside the data root, split non-empty. YAML anchors and aliases are refused. max_pixels: the
    limit read_sample applies to every image file (see disk/images.check_pixels)."""
    spec_file = spec_path(name_or_path)
    raw = _read_yaml(spec_file)
    root = data_root(root)
    samples, groups_of, unmatched, unpaired = _find_samples(raw, root, spec_file)
    if unmatched:
        raise SpecError(f"spec {spec_file}: image paths that 'match' does not fit: {_listing(unmatched)}.")
    if unpaired and raw.get("unpaired") != "skip":
        raise SpecError(f"spec {spec_file}: images without a mask: {_listing(unpaired)}; add the masks or "
                        "set 'unpaired: skip' in the spec.")
    split, rule = _split(raw, samples, groups_of, spec_file)
    for name in SPLITS:
        if not split[name]:
            raise SpecError(f"spec {spec_file}: the {name} split is empty; check 'split'.")
    foreground = raw.get("foreground", 255)
    foreground = tuple(foreground) if isinstance(foreground, (list, tuple)) else (foreground,)
    rule = {**rule, "unpaired_skipped": sorted(unpaired)}
    return Spec(raw["name"], spec_file, root, split, foreground, raw.get("augment") or {}, rule,
                _classes(raw.get("classes"), spec_file), max_pixels, raw.get("mpp"))


def _classes(raw, spec_file):
    """((name, value tuple), ...) from a spec's ``classes`` list, or () for a binary spec."""
    if raw is None:
        return ()
    example = "classes: [{name: background, value: 0}, {name: road, colour: [255, 0, 255]}]"
    if not isinstance(raw, list) or len(raw) < 2:
        raise SpecError(f"spec {spec_file}: 'classes' must list at least two classes, e.g. {example}.")
    classes = []
    for entry in raw:
        keys = set(entry) & {"value", "colour"} if isinstance(entry, dict) else set()
        if not isinstance(entry, dict) or "name" not in entry or len(keys) != 1:
            raise SpecError(f"spec {spec_file}: each class needs a name and one 'value' or 'colour', got {entry!r}; "
                            f"e.g. {example}.")
        value = entry[keys.pop()]
        value = tuple(value) if isinstance(value, (list, tuple)) else (value,)
        if len(value) not in (1, 3) or not all(isinstance(v, int) and 0 <= v <= 65535 for v in value):
            raise SpecError(f"spec {spec_file}: class {entry['name']!r}: a value is one integer, a colour three.")
        classes.append((str(entry["name"]), value))
    if len({len(v) for _, v in classes}) != 1 or len({v for _, v in classes}) != len(classes):
        raise SpecError(f"spec {spec_file}: classes must all use values or all colours, each different.")
    if len(classes) > 255:
        raise SpecError(f"spec {spec_file}: at most 255 classes (class ids are stored as uint8).")
    return tuple(classes)


def _as_class_ids(array, classes, path):
    """(uint8 (H, W) class ids, bool (H, W) labelled) of a mask; pixels matching no class are unlabelled."""
    width = len(classes[0][1])
    if width == 3 and (array.ndim != 3 or array.shape[2] < 3):
        raise SpecError(f"mask {path} is not a colour image but the spec's classes are colours.")
    plane = array[:, :, :3] if width == 3 else (array if array.ndim == 2 else array[:, :, 0])
    ids = np.zeros(array.shape[:2], np.uint8)
    labelled = np.zeros(array.shape[:2], bool)
    for index, (_, value) in enumerate(classes):
        hit = np.all(plane == np.asarray(value, dtype=array.dtype), axis=2) if width == 3 else plane == value[0]
        ids[hit] = index
        labelled |= hit
    return ids, labelled


def _as_binary(array, foreground, path):
    if len(foreground) == 1:
        plane = array if array.ndim == 2 else array[:, :, 0]
        return plane == foreground[0]
    if array.ndim != 3 or array.shape[2] < len(foreground):
        raise SpecError(f"mask {path} is not a colour image but the spec's foreground is a colour {foreground}.")
    return np.all(array[:, :, :len(foreground)] == np.asarray(foreground, dtype=array.dtype), axis=2)


def read_sample(spec, sample):
    """(image, target, fov or None), checking that their sizes agree: target bool (H, W) for a binary
    spec, uint8 class ids for a multi-class one (whose unlabelled pixels leave the fov)."""
    image = read_image(sample.image, spec.max_pixels)
    labelled = None
    if spec.multiclass:
        target, labelled = _as_class_ids(read_image(sample.mask, spec.max_pixels), spec.classes, sample.mask)
    else:
        target = _as_binary(read_image(sample.mask, spec.max_pixels), spec.foreground, sample.mask)
    fov = None
    if sample.fov is not None:
        fov_image = read_image(sample.fov, spec.max_pixels)
        fov = (fov_image if fov_image.ndim == 2 else fov_image.max(axis=2)) > 0
    for name, other in (("mask", target), ("field of view", fov)):
        if other is not None and other.shape != image.shape[:2]:
            raise SpecError(f"{sample.id}: {name} is {other.shape[1]} x {other.shape[0]} but the image is "
                            f"{image.shape[1]} x {image.shape[0]}; fix the data or the spec's templates.")
    if labelled is not None and not labelled.all():
        fov = labelled if fov is None else fov & labelled
    return image, target, fov


def check_spec(spec, split="all"):
    """Read every sample of ``split``; raise one SpecError listing all size mismatches."""
    problems = []
    for sample in spec.split(split):
        try:
            read_sample(spec, sample)
        except InputError as exc:
            problems.append(str(exc))
    if problems:
        raise SpecError(f"spec {spec.name}: {len(problems)} bad samples: " + " | ".join(problems[:MAX_LISTED]))
