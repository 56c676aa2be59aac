"""Evaluation: Dice, IoU and boundary F1 against cost, for S1 only, two-stage at several N_p, and
the baseline, on a split of a data spec.

Glossary
    method   "s1" (N_p = 0), "np=<N>" (two-stage with N windows), "baseline"
    row      one image and method: the metrics, MACs ratio and seconds
"""
import json
import time

import numpy as np

from .data import read_sample
from .io import atomic_output
from .metrics import scores

METRICS = ("dice", "iou", "boundary_f1")


def method_name(patches):
    return "s1" if patches == 0 else f"np={patches}"


def _row(sample_id, method, result, target, fov):
    pred = result.mask > 0
    return {"image": sample_id, "method": method, **scores(pred, target, fov),
            "macs_ratio": result.macs["ratio"], "macs": result.macs["total"],
            "seconds": result.seconds["total"], "windows": int(len(result.windows))}


def evaluate(segmenter, spec, split="test", patches=(0, 1, 2, 4, 8, 16, 32), score=None, limit=None,
             progress=None, **options):
    """Per-image rows and per-method means: {"rows": [...], "summary": {method: {...}}, ...}."""
    rows = []
    samples = spec.split(split)[:limit]
    for index, sample in enumerate(samples):
        image, target, fov = read_sample(spec, sample)
        for n in patches:
            result = segmenter.predict(image, patches=n, score=score, **options)
            rows.append(_row(sample.id, method_name(n), result, target, fov))
        rows.append(_row(sample.id, "baseline", segmenter.predict_baseline(image), target, fov))
        if progress:
            progress(index + 1, len(samples), sample.id)
    order = [method_name(n) for n in patches] + ["baseline"]
    return {"spec": spec.name, "split": split, "model": segmenter.source, "images": len(samples),
            "precision": segmenter.defaults["precision"],
            "score": score or "default", "options": options, "created": time.strftime("%Y-%m-%d %H:%M:%S"),
            "summary": summarise(rows, order), "rows": rows}


def summarise(rows, order):
    """Mean of every metric, MACs ratio and seconds per method, in ``order``."""
    summary = {}
    for method in order:
        chosen = [r for r in rows if r["method"] == method]
        summary[method] = {key: float(np.mean([r[key] for r in chosen]))
                           for key in METRICS + ("macs_ratio", "seconds")}
    base = summary.get("baseline", {}).get("dice")
    for values in summary.values():
        values["dice_vs_baseline"] = values["dice"] / base if base else float("nan")
    return summary


def markdown_table(report):
    """The summary as a Markdown table."""
    lines = [f"{report['spec']} ({report['split']} split, {report['images']} images, model {report['model']})", "",
             "| method | Dice | IoU | boundary F1 | Dice / baseline | MACs ratio | seconds |",
             "|---|---|---|---|---|---|---|"]
    for method, v in report["summary"].items():
        lines.append(f"| {method} | {v['dice']:.4f} | {v['iou']:.4f} | {v['boundary_f1']:.4f} | "
                     f"{100 * v['dice_vs_baseline']:.1f} % | {100 * v['macs_ratio']:.2f} % | {v['seconds']:.3f} |")
    return "\n".join(lines)


def write_report(report, json_path, markdown_path):
    """The report as JSON and its summary as Markdown, each written atomically."""
    with atomic_output(json_path) as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    with atomic_output(markdown_path) as tmp:
        tmp.write_text(markdown_table(report) + "\n", encoding="utf-8")
