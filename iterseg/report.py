"""The JSON report and the on-screen summary of one prediction."""
import numpy as np

from . import __version__


def class_fractions(mask, class_names):
    """{class name: fraction of the pixels} of a class-id mask."""
    counts = np.bincount(mask.ravel(), minlength=len(class_names))[:len(class_names)]
    return {name: round(float(c) / mask.size, 6) for name, c in zip(class_names, counts, strict=True)}


def labelled_windows(windows, scores):
    """[{"y", "x", "h", "w", "score"}] of windows (N, 4) of (y, x, h, w) in full-resolution pixels, in
    selection order; score None where there is none (windows given by the caller)."""
    rows = np.asarray(windows).astype(int).reshape(-1, 4).tolist()
    scores = [float(s) for s in scores] if len(scores) == len(rows) else [float("nan")] * len(rows)
    return [{"y": y, "x": x, "h": h, "w": w, "score": None if np.isnan(score) else score}
            for (y, x, h, w), score in zip(rows, scores, strict=True)]


def result_report(result, image_path, image_shape, model, outputs, foreground_fraction=None):
    """JSON-ready dict: image, model, options, windows, macs (with convention), seconds, outputs, notes.
    foreground_fraction (any class but 0): computed from ``result.mask`` unless given (streamed results
    have no mask). A multi-class in-memory result also gets ``class_fractions``."""
    if foreground_fraction is None:
        foreground_fraction = float((result.mask > 0).mean())
    extra = {}
    names = model.get("classes", ())
    if len(names) > 2 and not result.options.get("streamed"):  # a streamed mask is never built whole
        extra["class_fractions"] = class_fractions(result.mask, names)
    windows = labelled_windows(result.windows, result.scores)
    return {**extra,
        "iterseg": __version__,
        "image": {"path": str(image_path), "height": int(image_shape[0]), "width": int(image_shape[1]),
                  "channels": int(image_shape[2]) if len(image_shape) == 3 else 1},
        "model": model,
        "options": result.options,
        "windows": windows,
        "window_scores": [w["score"] for w in windows],  # also in "windows"; kept for older readers
        "foreground_fraction": float(foreground_fraction),
        "macs": result.macs,
        "seconds": {k: round(v, 4) for k, v in result.seconds.items()},
        "outputs": {k: str(v) for k, v in outputs.items()},
        "notes": list(result.notes),
    }


def _giga(macs):
    return f"{macs / 1e9:.2f} G"


def summary(report):
    """A few lines for the terminal."""
    image, macs, sec = report["image"], report["macs"], report["seconds"]
    options = report["options"]
    if options.get("baseline"):
        what = (f"  baseline: the full-resolution model over the whole image ({options.get('kind')}); "
                f"foreground {100 * report['foreground_fraction']:.1f} %")
    else:
        asked = f" of {options['patches']} windows asked" if options.get("patches") is not None else " windows"
        what = (f"  refined {len(report['windows'])}{asked}"
                f" ({options.get('patch_size')} px, score {options.get('score')}); "
                f"foreground {100 * report['foreground_fraction']:.1f} %")
    lines = [
        f"{image['path']}: {image['width']} x {image['height']}, model {report['model']['name']}",
        what,
        f"  MACs  S1 {_giga(macs['stage1'])}  S2 {_giga(macs['stage2'])}  total {_giga(macs['total'])}"
        f"  baseline {_giga(macs['baseline'])}  ratio {100 * macs['ratio']:.2f} %  ({macs['convention']})",
        f"  seconds ({options.get('precision', 'fp32')}, {options.get('backend', 'torch')})  "
        + "  ".join(f"{k} {v:.4f}" for k, v in sec.items()),
    ]
    if "class_fractions" in report:
        shares = sorted(report["class_fractions"].items(), key=lambda item: -item[1])
        lines.append("  classes  " + "  ".join(f"{name} {100 * share:.1f} %" for name, share in shares))
    lines += [f"  {note}" if note.startswith("warning: ") else f"  note: {note}" for note in report["notes"]]
    return "\n".join(lines)
