"""Streaming benchmark: time and peak memory of ``iterseg predict`` on synthetic pyramidal BigTIFFs.

    python -m benchmarks.gigapixel --sizes 5000,10000,20000 --patches 64

Each size gets a tiled (512 px, JPEG) pyramidal RGB BigTIFF written tile by tile into --dir (kept
and reused between runs), then the installed ``iterseg`` command segments it in a fresh process,
exactly as a user runs it, with the same N_p and window side for every size. Seconds per stage and
the process's peak RSS come from the JSON report. With --in-memory SIZE the same image is also
segmented with --stream never, for comparison. Writes <out>/gigapixel.json and gigapixel.md.
"""
import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from iterseg.disk.outputs import atomic_output

from .synthetic_tiff import write_synthetic_tiff
from .timing import machine

RESULTS = Path(__file__).parent / "results"


def synthetic_file(folder, side):
    path = folder / f"synthetic_{side}.tif"
    if not path.is_file():
        start = time.perf_counter()
        write_synthetic_tiff(path, side, side, seed=side)
        print(f"  wrote {path} in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    return path


def run_predict(path, out, args, stream):
    """Run the iterseg command on ``path``; returns its JSON report plus the wall-clock seconds."""
    command = [str(Path(sys.executable).with_name("iterseg")), "predict", str(path), "--patches",
               str(args.patches), "--patch-size", str(args.patch_size), "--model", args.model,
               "--precision", args.precision, "--stream", stream, "--out", str(out), "--overwrite", "--quiet"]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed: {done.stderr.strip()}")
    report = json.loads((out / f"{path.stem}.report.json").read_text())
    return {"side": int(path.stem.rsplit("_", 1)[1]), "stream": stream, "wall_s": wall,
            "seconds": report["seconds"], "seconds_writing": report["seconds_writing"],
            "peak_rss_mb": report["peak_rss_mb"], "tiles_read": report.get("tiles_read"),
            "macs_ratio": report["macs"]["ratio"], "windows": len(report["windows"]),
            "input_mb": path.stat().st_size / 2 ** 20,
            "mask_mb": Path(report["outputs"]["mask"]).stat().st_size / 2 ** 20, "notes": report["notes"]}


def markdown(result):
    lines = [f"Streaming `iterseg predict`, N_p = {result['patches']}, {result['patch_size']} px windows, model "
             f"{result['model']}, {result['precision']}; synthetic RGB pyramidal BigTIFFs (512 px JPEG tiles)", "",
             "| image | path | wall s | stage 1 s | select s | stage 2 s | writing s | peak RSS MB | tiles read | "
             "MACs ratio |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["runs"]:
        s = r["seconds"]
        lines.append(f"| {r['side']}² | {'streamed' if r['stream'] != 'never' else 'in memory'} | {r['wall_s']:.1f} | "
                     f"{s['stage1']:.2f} | {s['select']:.3f} | {s['stage2']:.2f} | {r['seconds_writing']:.1f} | "
                     f"{r['peak_rss_mb']:.0f} | {r['tiles_read'] if r['tiles_read'] is not None else ''} | "
                     f"{100 * r['macs_ratio']:.2f} % |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gigapixel", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="5000,10000,20000", type=lambda t: [int(v) for v in t.split(",")])
    parser.add_argument("--patches", type=int, default=64)
    parser.add_argument("--patch-size", type=int, default=320, help="window side, the same for every size")
    parser.add_argument("--model", default="ph2")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--in-memory", type=int, default=5000, metavar="SIZE",
                        help="also run this size with --stream never (0: no)")
    parser.add_argument("--dir", type=Path, default=Path("/tmp/iterseg-gigapixel"), help="where the images go")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    args.dir.mkdir(parents=True, exist_ok=True)
    runs = []
    for side in args.sizes:
        path = synthetic_file(args.dir, side)
        for stream in ("always", "never") if side == args.in_memory else ("always",):
            runs.append(run_predict(path, args.dir / f"out_{stream}", args, stream))
            print(f"  {side}^2 {stream}: {runs[-1]['wall_s']:.1f} s, peak RSS {runs[-1]['peak_rss_mb']:.0f} MB",
                  file=sys.stderr, flush=True)
    result = {"patches": args.patches, "patch_size": args.patch_size, "model": args.model,
              "precision": args.precision, "machine": machine(), "created": time.strftime("%Y-%m-%d %H:%M:%S"),
              "runs": runs}
    args.out.mkdir(parents=True, exist_ok=True)
    with atomic_output(args.out / "gigapixel.json") as tmp:
        tmp.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    with atomic_output(args.out / "gigapixel.md") as tmp:
        tmp.write_text(markdown(result) + "\n", encoding="utf-8")
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
