"""A model bundle from a training run folder: the best weights of each stage, the normalisation,
the stage-1 scale, the spec's classes and the run's provenance.

Run folder: ``out/s1/`` and ``out/s2/``, each with ``best.pt`` (best weights) and ``summary.json``
(written by loop.train_stage); the bundle is written to ``out/<name>.pt``.
"""
import dataclasses
import json
import time
from pathlib import Path

import torch

from .. import __version__
from ..engine.settings import DEFAULT_PATCHES, default_window_side
from ..errors import InputError
from ..model.bundle import Bundle
from ..model.store import load_bundle, save_bundle
from ..model.unet import UNet, UNetConfig
from .data import read_sample
from .defaults import derive_defaults

PROVENANCE_KEYS = ("best_val_dice", "seconds", "options", "val_ids", "from_bundle", "image_shape")


def load_stage_weights(path, width, depth, in_channels=3, out_channels=1):
    """A U-Net (in eval mode) with the best weights of a stage's run folder (``best.pt``)."""
    if not Path(path).is_file():
        raise InputError(f"{path} does not exist; train stage 1 first (iterseg train --stage s1).")
    model = UNet(UNetConfig(in_channels=in_channels, out_channels=out_channels, depth=depth, width=width))
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True)["model"])
    return model.eval()


def _summary(out_dir, stage):
    """The ``summary.json`` of a stage of a run folder."""
    path = Path(out_dir) / stage / "summary.json"
    if not path.is_file():
        raise InputError(f"{path} does not exist; train stage {stage} first.")
    return json.loads(path.read_text(encoding="utf-8"))


def _stage2(out_dir, s2_summary):
    """The trained S2 of a run folder (conditioned: K' more input channels)."""
    opts = s2_summary["options"]
    outputs = s2_summary.get("out_channels", 1)
    in_channels = 3 + (outputs if opts.get("condition") else 0)
    return load_stage_weights(Path(out_dir) / "s2" / "best.pt", opts["width"], opts["depth"], in_channels, outputs)


def _stage1(out_dir, s2_summary):
    """(S1, mean, std, s1_scale, reference network or None, S1's provenance) for the bundle.

    S2 trained with ``init_from`` takes S1 (and mean/std) from that bundle; a conditioned S2 started
    from an unconditioned one keeps that as the reference network of the baseline (one fine-tuned
    from a conditioned S2 without a reference has none). Otherwise S1 comes from the run folder."""
    s2_opts = s2_summary["options"]
    if s2_opts.get("init_from"):
        start = load_bundle(s2_opts["init_from"]).unconditioned()
        reference = start.s2 if s2_opts.get("condition") and not start.conditioned else None
        provenance = {"from_bundle": s2_opts["init_from"], **start.provenance.get("stages", {}).get("s1", {})}
        return start.s1, start.mean, start.std, start.s1_scale, reference, provenance
    summary = _summary(out_dir, "s1")
    opts = summary["options"]
    s1 = load_stage_weights(Path(out_dir) / "s1" / "best.pt", opts["width"], opts["depth"], 3,
                            s2_summary.get("out_channels", 1))
    return s1, tuple(s2_summary["mean"]), tuple(s2_summary["std"]), opts["s1_scale"], None, summary


def window_side(s2_summary, multiple):
    """The bundle's window side: that of a DEFAULT_PATCHES x DEFAULT_PATCHES grid on the median training
    image (the grid the sweeps measure), at most S2's largest training crop so that S2 has seen windows
    that large; None for a run folder from before image shapes were recorded."""
    shape = s2_summary.get("image_shape")
    if not shape or not all(shape):
        return None
    largest_crop = max(s2_summary["options"]["crop"] // multiple, 1) * multiple
    return min(default_window_side(shape, DEFAULT_PATCHES, multiple), largest_crop)


def _provenance(spec, stages, command):
    """The bundle's provenance: dataset, split, versions, command and each stage's summary."""
    return {"dataset": spec.name, "spec": spec.path.name, "split": spec.split_rule.get("by") or "recorded test list",
            "iterseg": __version__, "torch": torch.__version__, "command": command,
            "created": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "stages": {stage: {k: v for k, v in summary.items() if k in PROVENANCE_KEYS}
                       for stage, summary in stages.items()}}


def assemble_bundle(spec, out_dir, name, command=None):
    """Write ``out_dir/<name>.pt`` from the best weights of a run folder; returns its path
    (see ``_stage1`` for where S1, the normalisation and the reference network come from; a run that
    trained only S1 with ``init_from`` keeps that bundle's S2, see ``_new_stage1``)."""
    out_dir = Path(out_dir)
    if not (out_dir / "s2" / "summary.json").is_file() and _summary(out_dir, "s1")["options"].get("init_from"):
        return _new_stage1(spec, out_dir, name, command)
    s2_summary = _summary(out_dir, "s2")
    s2 = _stage2(out_dir, s2_summary)
    s1, mean, std, scale, reference, s1_provenance = _stage1(out_dir, s2_summary)
    provenance = _provenance(spec, {"s2": s2_summary, "s1": s1_provenance}, command)
    bundle = Bundle(s1=s1, s2=s2, mean=tuple(mean), std=tuple(std), s1_scale=scale, name=name,
                    provenance=provenance, reference=reference, class_names=spec.class_names, palette=spec.palette,
                    window=window_side(s2_summary, s2.config.size_multiple), mpp=spec.mpp)
    path = out_dir / f"{name}.pt"
    write_defaults(bundle, spec, path)
    return path


def validation_samples(spec, bundle):
    """(image, target, fov) of the images ``bundle``'s stage 2 was validated on (``val_ids``)."""
    stages = bundle.provenance.get("stages", {})
    ids = set(stages.get("s2", {}).get("val_ids") or stages.get("s1", {}).get("val_ids") or [])
    samples = [sample for sample in spec.split("all") if sample.id in ids]
    if not samples:
        raise InputError(f"bundle {bundle.name!r} records no validation images of spec {spec.name}; "
                         "pass the spec it was trained on.")
    return [read_sample(spec, sample) for sample in samples]


def write_defaults(bundle, spec, path):
    """Measure ``bundle``'s context and window count on its validation images (training/defaults.py),
    write the bundle with them to ``path`` and return what was measured."""
    from ..api import Segmenter  # the engine's entry point; api never imports training
    samples = validation_samples(spec, bundle)
    chosen = derive_defaults(Segmenter(bundle, precision="fp32", warm_up=False), samples)
    chosen["measured"] = f"on {len(samples)} validation image(s) of {spec.name}"
    bundle = dataclasses.replace(bundle, context=chosen["context"], patches=chosen.get("patches", bundle.patches),
                                 provenance={**bundle.provenance, "default": chosen})
    save_bundle(bundle, path, half=True)
    return chosen


def s2_partner(init_from):
    """The bundle whose S2 a new S1 (``--stage s1 --init-from``) will work with; InputError if its S2
    is conditioned on its own stage 1 (it would see another S1's probabilities) and keeps no
    unconditioned reference."""
    bundle = load_bundle(init_from).unconditioned()
    if bundle.conditioned:
        raise InputError(f"--init-from {init_from}: its S2 is conditioned on the bundle's own stage 1, so it "
                         "cannot work with a new one; pass the unconditioned bundle it was fine-tuned from.")
    return bundle


def _new_stage1(spec, out_dir, name, command):
    """The bundle of a run that trained a new S1 (``--stage s1 --init-from BUNDLE``): that S1 and its
    stage-1 scale, with the bundle's S2, normalisation and classes."""
    summary = _summary(out_dir, "s1")
    opts = summary["options"]
    partner = s2_partner(opts["init_from"])
    s1 = load_stage_weights(out_dir / "s1" / "best.pt", opts["width"], opts["depth"], 3,
                            partner.s2.config.out_channels)
    provenance = _provenance(spec, {"s1": summary, "s2": {"from_bundle": opts["init_from"],
                                                          **partner.provenance.get("stages", {}).get("s2", {})}},
                             command)
    bundle = Bundle(s1=s1, s2=partner.s2, mean=partner.mean, std=partner.std, s1_scale=opts["s1_scale"], name=name,
                    provenance=provenance, class_names=partner.class_names, palette=partner.palette,
                    window=partner.window, mpp=spec.mpp or partner.mpp)
    path = out_dir / f"{name}.pt"
    write_defaults(bundle, spec, path)
    return path
