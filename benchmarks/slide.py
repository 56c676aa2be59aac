"""Whole-slide benchmark (issue 28): ``iterseg predict slide.svs`` on a synthetic 40000 x 30000
Aperio-style slide (512 px JPEG tiles, 3 levels downsampled by 4, MPP 0.499 in the description),
under an address-space limit, as a user runs it.

    python -m benchmarks.slide [--width 40000 --height 30000] [--limit-gb 3] [--backend torch]

The slide is written once into --dir (benchmarks/synthetic_slide.py, tile by tile) and reused. The
installed ``iterseg`` command runs in a fresh process with RLIMIT_AS (``ulimit -v``) set to
--limit-gb; the numbers come from its report: peak RSS, seconds, tiles read, against the level-0
tiles under the refined windows (the most stage 2 may read); the mask OME-TIFF's PhysicalSizeX/Y are
checked against the slide's MPP. Writes <out>/slide.json and slide.md.
"""
import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import tifffile

from iterseg.disk.outputs import atomic_output

from .synthetic_slide import write_synthetic_svs
from .timing import machine

RESULTS = Path(__file__).parent / "results"
TILE = 512
MPP = 0.499


def slide_file(folder, height, width):
    path = folder / f"slide_{width}x{height}.svs"
    if not path.is_file():
        start = time.perf_counter()
        write_synthetic_svs(path, height, width, seed=0, mpp=MPP, tile=(TILE, TILE))
        print(f"  wrote {path} in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    return path


def tiles_under(windows, height, width, margin=0):
    """Level-0 tiles overlapped by the windows ({y, x, h, w} dicts), each grown by ``margin`` px."""
    found = set()
    for w in windows:
        y0, x0 = max(0, w["y"] - margin) // TILE, max(0, w["x"] - margin) // TILE
        y1 = min(height - 1, w["y"] + w["h"] + margin - 1) // TILE
        x1 = min(width - 1, w["x"] + w["w"] + margin - 1) // TILE
        found |= {(r, c) for r in range(y0, y1 + 1) for c in range(x0, x1 + 1)}
    return len(found)


def physical_size(mask_path):
    """(PhysicalSizeX, PhysicalSizeY) of an OME-TIFF, as written."""
    import xml.etree.ElementTree as ElementTree
    with tifffile.TiffFile(mask_path) as tif:
        pixels = next(e for e in ElementTree.fromstring(tif.ome_metadata).iter() if e.tag.endswith("}Pixels"))
    return float(pixels.attrib["PhysicalSizeX"]), float(pixels.attrib["PhysicalSizeY"])


def run_predict(path, out, args):
    """Run the iterseg command on ``path`` under RLIMIT_AS; returns the measurements."""
    command = [str(Path(sys.executable).with_name("iterseg")), "predict", str(path), "--model", args.model,
               "--precision", args.precision, "--backend", args.backend, "--out", str(out), "--overwrite", "--quiet"]
    if args.patches is not None:
        command += ["--patches", str(args.patches)]
    limit = int(args.limit_gb * 2 ** 30)

    def limited():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, preexec_fn=limited)
    wall = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    report = json.loads((out / f"{path.stem}.report.json").read_text())
    height, width = report["image"]["height"], report["image"]["width"]
    return {"width": width, "height": height, "wall_s": round(wall, 1), "limit_gb": args.limit_gb,
            "seconds": report["seconds"], "seconds_writing": report["seconds_writing"],
            "peak_rss_mb": report["peak_rss_mb"], "tiles_read": report["tiles_read"],
            # what stage 2 reads: the windows with their context, whose boxes start on the size-multiple
            # grid (engine/infer.context_boxes: at most one multiple, 16 px for ph2, further out)
            "tiles_under_windows": tiles_under(report["windows"], height, width,
                                               context + 16 if (context := report["options"].get("context")) else 0),
            "level0_tiles": -(-height // TILE) * -(-width // TILE), "windows": len(report["windows"]),
            "patch_size": report["options"].get("patch_size"), "macs_ratio": report["macs"]["ratio"],
            "backend": f"{report['options'].get('backend')} ({report['options'].get('backend_reason')})",
            "mpp": report["image"].get("mpp"), "objective_power": report["image"].get("objective_power"),
            "mask_physical_size": physical_size(report["outputs"]["mask"]), "input_mb": path.stat().st_size / 2 ** 20,
            "notes": report["notes"]}


def markdown(result):
    r, s = result["run"], result["run"]["seconds"]
    return "\n".join([
        f"`iterseg predict` on a synthetic {r['width']} x {r['height']} Aperio-style .svs (512 px JPEG tiles, "
        f"3 levels by 4, MPP {MPP}), model {result['model']}, {result['precision']}, backend {r['backend']}, "
        f"RLIMIT_AS {r['limit_gb']:g} GB "
        f"({result['created']})", "",
        "| wall s | stage 1 s | select s | stage 2 s | writing s | peak RSS MB | windows | tiles read | "
        "level-0 tiles under the windows | level-0 tiles | mask PhysicalSizeX/Y |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        f"| {r['wall_s']:.1f} | {s['stage1']:.1f} | {s['select']:.2f} | {s['stage2']:.2f} | "
        f"{r['seconds_writing']:.1f} | "
        f"{r['peak_rss_mb']:.0f} | {r['windows']} x {r['patch_size']} px | {r['tiles_read']} | "
        f"{r['tiles_under_windows']} | {r['level0_tiles']} | {r['mask_physical_size'][0]:g} / "
        f"{r['mask_physical_size'][1]:g} |"])


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.slide", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=40000)
    parser.add_argument("--height", type=int, default=30000)
    parser.add_argument("--patches", type=int, default=None, help="windows (default: the model's)")
    parser.add_argument("--model", default="ph2")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--backend", default="auto", help="auto, torch or openvino (iterseg predict --backend)")
    parser.add_argument("--limit-gb", type=float, default=3.0, help="RLIMIT_AS of the iterseg process (ulimit -v)")
    parser.add_argument("--dir", type=Path, default=Path("/tmp/iterseg-slide"), help="where the slide goes")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    args.dir.mkdir(parents=True, exist_ok=True)
    run = run_predict(slide_file(args.dir, args.height, args.width), args.dir / "out", args)
    result = {"model": args.model, "precision": args.precision, "machine": machine(),
              "created": time.strftime("%Y-%m-%d %H:%M:%S"), "run": run}
    args.out.mkdir(parents=True, exist_ok=True)
    with atomic_output(args.out / "slide.json") as tmp:
        tmp.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    with atomic_output(args.out / "slide.md") as tmp:
        tmp.write_text(markdown(result) + "\n", encoding="utf-8")
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
