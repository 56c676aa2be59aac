"""int8 against fp32 and bf16 on a dataset: bundle size, seconds per image and Dice, same images.

    python -m benchmarks.int8 --spec drive --model drive --data-root ../shared/data

The int8 bundle is calibrated here as `iterseg quantize` does (8 training images, seed 0). Every test
image (up to --images) runs two-stage (the model's default windows, or --patches) and the baseline in
each precision in turn, so all precisions see the same machine load; every precision runs on the
backend auto picks for it (recorded: OpenVINO's int8 where its probe finds it faster than its float
run, else PyTorch's). Seconds are the median over images after the first, whose time is reported
apart. On CPUs without bf16
units (AVX-512 BF16 or AMX) bf16 is emulated and many times slower: there it runs on the first
--emulated-bf16-images only.
Results are merged into <out>/int8.json and int8.md, one entry per dataset and CPU capability
(AVX2, AVX512, ...), so runs on different machines stand side by side.
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import iterseg
from iterseg.disk.outputs import atomic_output
from iterseg.model.cpu import lacks_bf16_units
from iterseg.model.store import load_bundle, save_bundle
from iterseg.training.calibrate import calibrate_bundle, calibration_images
from iterseg.training.data import load_spec, read_sample
from iterseg.training.metrics import dice

from .timing import machine

RESULTS = Path(__file__).parent / "results"
METHODS = ("two-stage", "baseline")


def bundle_sizes(bundle, int8):
    """MB on disk of the bundle saved as float32, as float16 (the shipped format) and as int8."""
    sizes = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, source, half in (("fp32", bundle, False), ("fp16", bundle, True), ("int8", int8, True)):
            path = Path(folder) / f"{name}.pt"
            save_bundle(source, path, half=half)
            sizes[name] = path.stat().st_size / 2 ** 20
    return sizes


def run_one(segmenter, image, method, patches):
    start = time.perf_counter()
    result = segmenter.predict(image, patches=patches) if method == "two-stage" else segmenter.predict_baseline(image)
    return result, time.perf_counter() - start


def measure(args):
    load_before = os.getloadavg()[0]
    spec = load_spec(args.spec, args.data_root)
    bundle = load_bundle(args.model)
    images, ids = calibration_images(spec, args.calibration_images, seed=0)
    started = time.perf_counter()
    int8 = calibrate_bundle(bundle, images, {"spec": spec.name, "image_ids": ids, "seed": 0})
    calibration_seconds = time.perf_counter() - started
    segmenters = {"fp32": iterseg.Segmenter(bundle, precision="fp32"),
                  "bf16": iterseg.Segmenter(bundle, precision="bf16"),
                  "int8": iterseg.Segmenter(int8, precision="int8")}
    bf16_images = args.emulated_bf16_images if lacks_bf16_units() else args.images
    rows = []
    for index, sample in enumerate(spec.split("test")[:args.images]):
        image, target, fov = read_sample(spec, sample)
        for precision, segmenter in segmenters.items():
            if precision == "bf16" and index >= bf16_images:
                continue
            for method in METHODS:
                result, seconds = run_one(segmenter, image, method, args.patches)
                rows.append({"image": sample.id, "index": index, "precision": precision, "method": method,
                             "backend": result.options["backend"],
                             "dice": dice(result.mask > 0, target, fov), "seconds": seconds,
                             "macs_ratio": result.macs["ratio"]})
        print(f"  [{index + 1}] {sample.id} ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
    return {"dataset": spec.name, "model": str(args.model), "patches": args.patches, "machine": machine(),
            "load": [load_before, os.getloadavg()[0]],
            "created": time.strftime("%Y-%m-%d %H:%M:%S"), "calibration_images": ids,
            "calibration_seconds": calibration_seconds, "bundle_mb": bundle_sizes(bundle, int8),
            "summary": summarise(rows), "rows": rows}


def summarise(rows):
    """Per (precision, method): images, mean Dice, Dice change against fp32 on the same images,
    median seconds over images after the first, and the first image's seconds."""
    out = []
    for precision in ("fp32", "bf16", "int8"):
        for method in METHODS:
            chosen = [r for r in rows if r["precision"] == precision and r["method"] == method]
            if not chosen:
                continue
            indices = {r["index"] for r in chosen}
            fp32 = [r for r in rows if r["precision"] == "fp32" and r["method"] == method and r["index"] in indices]
            later = [r["seconds"] for r in chosen if r["index"] > 0] or [chosen[0]["seconds"]]
            out.append({"precision": precision, "method": method, "images": len(chosen),
                        "backend": "/".join(sorted({r.get("backend", "torch") for r in chosen})),
                        "dice": statistics.fmean(r["dice"] for r in chosen),
                        "dice_change": statistics.fmean(r["dice"] for r in chosen)
                        - statistics.fmean(r["dice"] for r in fp32),
                        "seconds": statistics.median(later), "first_seconds": chosen[0]["seconds"]})
    return out


def entry_key(entry):
    """Key of a result in int8.json: the dataset and the CPU capability torch used, e.g. 'drive (AVX2)'."""
    return f"{entry['dataset']} ({entry['machine'].get('cpu_capability', '?')})"


def markdown(results):
    lines = ["| dataset | CPU | precision | backend | bundle MB | method | images | Dice | Dice - fp32 "
             "| s / image (median) | first image s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for entry in results.values():
        sizes = entry["bundle_mb"]
        cpu = entry["machine"].get("cpu_capability", "?")
        for s in entry["summary"]:
            size = sizes["int8"] if s["precision"] == "int8" else sizes["fp16"]
            lines.append(f"| {entry['dataset']} | {cpu} | {s['precision']} | {s.get('backend', 'torch')} | {size:.1f} "
                         f"| {s['method']} "
                         f"| {s['images']} | "
                         f"{s['dice']:.4f} | {s['dice_change']:+.4f} | {s['seconds']:.3f} | {s['first_seconds']:.1f} |")
    lines.append("")
    for entry in results.values():
        fp32 = {s["method"]: s["seconds"] for s in entry["summary"] if s["precision"] == "fp32"}
        ratios = ", ".join(f"{s['precision']} {s['method']} {fp32[s['method']] / s['seconds']:.2f}x"
                           for s in entry["summary"] if s["precision"] != "fp32")
        lines.append(f"- {entry_key(entry)}: speed against fp32: {ratios}; bundle float32 "
                     f"{entry['bundle_mb']['fp32']:.1f} MB; calibration {entry['calibration_seconds']:.0f} s; "
                     f"load {'/'.join(f'{x:.1f}' for x in entry.get('load', []))}; "
                     f"CPU {entry['machine']['cpu']} ({entry['machine'].get('cpu_capability', '?')})")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.int8", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--images", type=int, default=20, help="test images (default 20)")
    parser.add_argument("--emulated-bf16-images", type=int, default=3,
                        help="on a CPU without bf16 units, bf16 runs on the first N only (default 3)")
    parser.add_argument("--calibration-images", type=int, default=8)
    parser.add_argument("--patches", type=int, default=None, help="windows (default: the model's own)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    entry = measure(args)
    path = args.out / "int8.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    results[entry_key(entry)] = entry
    args.out.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    with atomic_output(args.out / "int8.md") as tmp:
        tmp.write_text(markdown(results) + "\n", encoding="utf-8")
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
