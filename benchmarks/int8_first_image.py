"""int8 without the wait: seconds of the first image against later ones, and Dice against fp32.

    nice python -m benchmarks.int8_first_image --spec ph2 --model ph2 --data-root ../shared/data

Calibrates the bundle as `iterseg quantize` does (8 training images, seed 0), then in ONE fresh
process loads it in int8 (eager x86 kernels, no compilation) and runs two-stage at N_p = 16 on
--images test images, then fp32 on the same images; one thread. Records the seconds of loading
(the int8 networks are made then, once per process; faster when the observer map of an earlier
process is kept on disk, model/cache.py), the first image's seconds, the median of the later ones,
the Dice of both precisions against the ground truth, the CPU kind and the load average, into
benchmarks/results/int8_first_image.json (one entry per dataset and CPU kind: run it twice to
see both the first process on a machine and a later one).
"""
import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

import iterseg
from iterseg.model import cpu
from iterseg.model.cache import cache_dir
from iterseg.model.store import load_bundle
from iterseg.training.calibrate import calibrate_bundle, calibration_images
from iterseg.training.data import load_spec, read_sample
from iterseg.training.metrics import dice

RESULTS = Path(__file__).parent / "results"


def timed_dice(segmenter, spec, samples, patches):
    """([seconds per image], [Dice per image]) of two-stage predictions of ``samples`` (binary spec)."""
    seconds, scores = [], []
    for sample in samples:
        image, target, fov = read_sample(spec, sample)
        start = time.perf_counter()
        result = segmenter.predict(image, patches=patches)
        seconds.append(time.perf_counter() - start)
        scores.append(dice(result.mask > 0, target, fov))
    return seconds, scores


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--patches", type=int, default=16)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    load_before = os.getloadavg()
    spec = load_spec(args.spec, args.data_root)
    bundle = load_bundle(args.model)
    images, _ = calibration_images(spec, 8, seed=0)
    int8 = calibrate_bundle(bundle, images)
    samples = spec.split("test")[:args.images]
    kept_map = (cache_dir() / "int8_map.json").is_file()
    start = time.perf_counter()
    segmenter = iterseg.Segmenter(int8, precision="int8")  # loading makes the int8 networks, once per process
    load_seconds = time.perf_counter() - start
    int8_seconds, int8_dice = timed_dice(segmenter, spec, samples, args.patches)
    fp32_seconds, fp32_dice = timed_dice(iterseg.Segmenter(bundle, precision="fp32"), spec, samples, args.patches)
    later = statistics.median(int8_seconds[1:])
    entry = {"cpu_kind": cpu.cpu_kind(), "load_average": {"before": load_before, "after": os.getloadavg()},
             "spec": args.spec, "images": len(samples), "threads": 1,
             "int8": {"observer_map_kept_on_disk": kept_map, "load_seconds": load_seconds,
                      "first_seconds": int8_seconds[0], "first_with_load_seconds": load_seconds + int8_seconds[0],
                      "later_median_seconds": later, "first_over_later": int8_seconds[0] / later,
                      "first_with_load_over_later": (load_seconds + int8_seconds[0]) / later,
                      "dice": statistics.mean(int8_dice)},
             "fp32": {"first_seconds": fp32_seconds[0], "later_median_seconds": statistics.median(fp32_seconds[1:]),
                      "dice": statistics.mean(fp32_dice)}}
    entry["dice_change"] = entry["int8"]["dice"] - entry["fp32"]["dice"]
    path = RESULTS / "int8_first_image.json"
    known = json.loads(path.read_text()) if path.is_file() else {}
    known[f"{args.spec} {entry['cpu_kind']}"] = entry
    path.write_text(json.dumps(known, indent=1) + "\n")
    print(json.dumps(entry, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
