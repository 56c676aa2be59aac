"""Evaluation: quality against cost, for S1 only, two-stage at several N_p, and the baseline, on a
split of a data spec. Binary specs: Dice, IoU and boundary F1 (means over images). Multi-class
specs: IoU per class and their mean (mIoU), from intersections and unions summed over the split
(as PASCAL VOC and Cityscapes report them), and pixel accuracy.

Glossary
    method   "s1" (N_p = 0), "np=<N>" (two-stage with N windows), "baseline"
    row      one image and method: the metrics, MACs ratio and seconds
    score    the window score of the two-stage methods: 'mean' | 'uncertainty', None = the model's default
             ('mean' for a binary model, 'uncertainty' for a multi-class one)
    image    (H, W[, C]) array as read; target and fov as in data.py; a Result's mask is uint8 (H, W)
"""
import json
import time

import numpy as np

from ..disk.outputs import atomic_output
from ..errors import InputError
from .data import read_sample
from .defaults import FALL, falls
from .metrics import class_counts, scores

METRICS = ("dice", "iou", "boundary_f1")
COSTS = ("macs_ratio", "seconds")


def method_name(patches):
    return "s1" if patches == 0 else f"np={patches}"


def _row(sample_id, method, result, target, fov, num_classes):
    if num_classes == 2:
        quality = scores(result.mask > 0, target, fov)
    else:
        both, union = class_counts(result.mask, target, num_classes, fov)
        labelled = int(fov.sum()) if fov is not None else target.size
        quality = {"intersection": both.tolist(), "union": union.tolist(), "correct": int(both.sum()),
                   "labelled": labelled}
    return {"image": sample_id, "method": method, **quality,
            "macs_ratio": result.macs["ratio"], "macs": result.macs["total"],
            "seconds": result.seconds["total"], "windows": int(len(result.windows))}


def evaluate(segmenter, spec, split="test", patches=(0, 1, 2, 4, 8, 16, 32), score=None, limit=None,
             progress=None, **options):
    """Per-image rows and per-method means: {"rows": [...], "summary": {method: {...}}, ...}."""
    if segmenter.bundle.num_classes != spec.num_classes:
        raise InputError(f"model {segmenter.source} has {segmenter.bundle.num_classes} classes but spec "
                         f"{spec.name} has {spec.num_classes}; evaluate a model trained on this spec.")
    rows = []
    samples = spec.split(split)[:limit]
    for index, sample in enumerate(samples):
        image, target, fov = read_sample(spec, sample)
        for n in patches:
            result = segmenter.predict(image, patches=n, score=score, **options)
            rows.append(_row(sample.id, method_name(n), result, target, fov, spec.num_classes))
        rows.append(_row(sample.id, "baseline", segmenter.predict_baseline(image), target, fov, spec.num_classes))
        if progress:
            progress(index + 1, len(samples), sample.id)
    order = [method_name(n) for n in patches] + ["baseline"]
    summary = summarise(rows, order) if spec.num_classes == 2 else summarise_classes(rows, order, spec.class_names)
    return {"spec": spec.name, "split": split, "model": segmenter.source, "images": len(samples),
            "classes": list(spec.class_names),
            "precision": segmenter.defaults["precision"],
            "score": score or "default", "options": options, "created": time.strftime("%Y-%m-%d %H:%M:%S"),
            "summary": summary, "notes": refinement_notes(summary, patches), "rows": rows}


def refinement_notes(summary, patches):
    """Notes where refining more windows lowered the quality (Dice, or mIoU for multi-class) by more
    than FALL: a note, not silence (issue 26)."""
    key = "dice" if "dice" in summary.get("baseline", {}) else "miou"
    curve = sorted((n, summary[method_name(n)][key], 0.0) for n in set(patches))
    return [f"refinement lowered {'Dice' if key == 'dice' else 'mIoU'}: {drop:.4f} less with {after} windows "
            f"than with {before}" for before, after, drop in falls(curve, FALL)]


def summarise(rows, order):
    """Mean of every metric, MACs ratio and seconds per method, in ``order``."""
    summary = {}
    for method in order:
        chosen = [r for r in rows if r["method"] == method]
        summary[method] = {key: float(np.mean([r[key] for r in chosen])) for key in METRICS + COSTS}
    base = summary.get("baseline", {}).get("dice")
    for values in summary.values():
        values["dice_vs_baseline"] = values["dice"] / base if base else float("nan")
    return summary


def summarise_classes(rows, order, class_names):
    """Per method: IoU per class and mIoU from the split's summed intersections and unions (classes
    that never occur are left out of the mean), pixel accuracy, and mean MACs ratio and seconds."""
    summary = {}
    for method in order:
        chosen = [r for r in rows if r["method"] == method]
        both = np.sum([r["intersection"] for r in chosen], axis=0)
        union = np.sum([r["union"] for r in chosen], axis=0)
        ious = {name: (float(b / u) if u else None) for name, b, u in zip(class_names, both, union, strict=True)}
        present = [v for v in ious.values() if v is not None]
        summary[method] = {"miou": float(np.mean(present)) if present else float("nan"), "class_iou": ious,
                           "pixel_accuracy": (sum(r["correct"] for r in chosen)
                                              / max(1, sum(r["labelled"] for r in chosen))),
                           **{key: float(np.mean([r[key] for r in chosen])) for key in COSTS}}
    base = summary.get("baseline", {}).get("miou")
    for values in summary.values():
        values["miou_vs_baseline"] = values["miou"] / base if base else float("nan")
    return summary


def markdown_table(report):
    """The summary as a Markdown table."""
    title = f"{report['spec']} ({report['split']} split, {report['images']} images, model {report['model']})"
    if len(report.get("classes", ())) > 2:
        return _class_table(report, title)
    lines = [title, "",
             "| method | Dice | IoU | boundary F1 | Dice / baseline | MACs ratio | seconds |",
             "|---|---|---|---|---|---|---|"]
    for method, v in report["summary"].items():
        lines.append(f"| {method} | {v['dice']:.4f} | {v['iou']:.4f} | {v['boundary_f1']:.4f} | "
                     f"{100 * v['dice_vs_baseline']:.1f} % | {100 * v['macs_ratio']:.2f} % | {v['seconds']:.3f} |")
    return "\n".join(lines + _notes(report))


def _class_table(report, title):
    names = report["classes"]
    lines = [title, "", "| method | mIoU | " + " | ".join(f"IoU {n}" for n in names) +
             " | pixel acc. | mIoU / baseline | MACs ratio | seconds |",
             "|---" * (len(names) + 6) + "|"]
    for method, v in report["summary"].items():
        per_class = " | ".join("-" if v["class_iou"][n] is None else f"{v['class_iou'][n]:.4f}" for n in names)
        lines.append(f"| {method} | {v['miou']:.4f} | {per_class} | {v['pixel_accuracy']:.4f} | "
                     f"{100 * v['miou_vs_baseline']:.1f} % | {100 * v['macs_ratio']:.2f} % | {v['seconds']:.3f} |")
    return "\n".join(lines + _notes(report))


def _notes(report):
    notes = report.get("notes", [])
    return [""] + [f"- {note}" for note in notes] if notes else []


def write_report(report, json_path, markdown_path):
    """The report as JSON and its summary as Markdown, each written atomically."""
    with atomic_output(json_path) as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    with atomic_output(markdown_path) as tmp:
        tmp.write_text(markdown_table(report) + "\n", encoding="utf-8")
