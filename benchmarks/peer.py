"""iterseg against the peer a CPU user would run instead: the plain full-resolution U-Net exported to
OpenVINO (``ov.convert_model`` on the example input, compiled for the CPU with a static shape, at the
faster of f32 and bf16 there), every number a ratio measured in the same process.

    nice python -m benchmarks.peer [--data-root DIR] [--threads 1,2] [--quick]

Measured, for each thread count (torch and OpenVINO both limited to it):
1. the hrf bundle's full-resolution network on 16 windows of 64 px, 16 of 224 px and a whole 2048^2
   image: iterseg's runner (precision and backend auto) against the peer in the same precision, GFLOP/s;
2. HRF test image 01_h (with the data): `predict` at the hrf model's defaults and `predict_baseline`
   against the peer's whole-image run at its fastest precision, normalisation and sigmoid timed on
   both sides (as ../shared/bench/peer_speed.py), and the Dice of each against the manual mask;
3. a synthetic 2048^2 image with the hrf model (unconditioned, so that its full-resolution network is
   the peer's), N_p = 16 windows of 128 px: the wall ratio against
   the peer's whole-image run beside the MACs ratio, and a folder of 16 such images in images per
   second, iterseg against the peer.
Timing: one warm-up, then the median of --repeats interleaved calls; the CPU kind and the load average
before and after go with the result into benchmarks/results/peer.json (one entry per CPU kind and
thread count) and peer.md.
"""
import argparse
import json
import os
import time
from pathlib import Path

import cv2
import numpy as np
import torch

import iterseg
from iterseg.engine.cost import count_macs
from iterseg.model import cpu

from .timing import interleaved_medians, machine

RESULTS = Path(__file__).parent / "results"
DATA = Path(os.environ.get("ITERSEG_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def peer_network(net, shape, hint, threads):
    """``net`` (a torch module, as trained) converted by OpenVINO for inputs of ``shape`` (N, C, h, w)
    and compiled for the CPU with inference precision ``hint`` ('f32' or 'bf16'): x (NumPy) -> logits."""
    import openvino as ov
    converted = ov.convert_model(net.eval(), example_input=torch.zeros(shape))
    compiled = ov.Core().compile_model(converted, "CPU", {"INFERENCE_PRECISION_HINT": hint,
                                                          "INFERENCE_NUM_THREADS": threads})
    return lambda x: compiled(x)[0]


def hints():
    """OpenVINO precisions worth trying on this CPU: f32 always, bf16 where it has bf16 units."""
    return ["f32"] + ([] if cpu.lacks_bf16_units() else ["bf16"])


def network_rates(net, threads, repeats, quick):
    """{input: {"iterseg", "peer", "ratio", "precision", "backend"}}: GFLOP/s of iterseg's runner
    (auto precision and backend) and of the peer in the same precision, on (N, h, w) inputs."""
    bundle_runner = iterseg.load("hrf").bundle.runners()[1]
    hint = {"fp32": "f32", "bf16": "bf16"}[str(bundle_runner.precision)]
    out = {}
    for n, h, w in [(16, 64, 64), (16, 224, 224)] + ([] if quick else [(1, 2048, 2048)]):
        x = torch.randn(n, net.config.in_channels, h, w)
        peer = peer_network(net, tuple(x.shape), hint, threads)
        numpy_x = x.numpy()  # each side gets the input in its own memory order: the engine's batches are channels_last
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            seconds = interleaved_medians({"iterseg": lambda x=x: bundle_runner(x),
                                           "peer": lambda peer=peer, x=numpy_x: peer(x)}, rounds=repeats)
        flop = 2 * n * count_macs(net.config, h, w)
        row = {name: flop / s / 1e9 for name, s in seconds.items()}
        out[f"{n}x{h}x{w}"] = {**row, "ratio": row["iterseg"] / row["peer"], "precision": str(bundle_runner.precision),
                               "backend": str(bundle_runner.backend)}
    return out


def peer_whole_image(segmenter, image, threads):
    """(seconds, hint, probs) of the peer over the whole ``image`` (H, W, C uint8) at its fastest
    precision: normalisation, the padded network and the sigmoid, as a user would run it."""
    bundle = segmenter.bundle
    net = bundle.networks().get("reference", bundle.s2)
    multiple = net.config.size_multiple
    height, width = image.shape[:2]
    padded_h, padded_w = -(-height // multiple) * multiple, -(-width // multiple) * multiple
    mean, std = np.float32(bundle.mean), np.float32(bundle.std)

    def prepared():
        x = ((image.astype(np.float32) / 255 - mean) / std).transpose(2, 0, 1)
        return np.ascontiguousarray(np.pad(x, ((0, 0), (0, padded_h - height), (0, padded_w - width)),
                                           mode="reflect")[None])
    best = None
    for hint in hints():
        run = peer_network(net, (1, 3, padded_h, padded_w), hint, threads)

        def whole(run=run):
            return 1 / (1 + np.exp(-run(prepared())[0, 0, :height, :width]))
        seconds = interleaved_medians({"peer": whole}, rounds=3)["peer"]
        if best is None or seconds < best[0]:
            best = (seconds, hint, whole)
    return best[0], best[1], best[2]()


def dice(mask, truth, fov):
    a, b = np.asarray(mask)[fov] > 0, truth[fov]
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def hrf_case(threads, data_root):
    """HRF 01_h: predict (defaults) and predict_baseline against the peer's whole-image run, with Dice."""
    import tifffile
    image = cv2.cvtColor(cv2.imread(str(data_root / "HRF" / "images" / "01_h.jpg")), cv2.COLOR_BGR2RGB)
    def read(p):
        a = tifffile.imread(p)
        return (a[..., 0] if a.ndim == 3 else a) > 127
    truth, fov = read(data_root / "HRF" / "manual1" / "01_h.tif"), read(data_root / "HRF" / "mask" / "01_h_mask.tif")
    segmenter = iterseg.load("hrf")
    peer_s, hint, peer_probs = peer_whole_image(segmenter, image, threads)
    results = {}
    # each timed back to back, as the peer is and as a folder runs: interleaved with the baseline (whose
    # whole-image activations evict the caches) the default took 0.130 s instead of 0.095-0.104 s
    # (AMX, 2 threads, 2026-12-05)
    seconds = {**interleaved_medians({"predict": lambda: results.__setitem__("predict", segmenter.predict(image))},
                                     rounds=9),
               **interleaved_medians({"baseline": lambda: results.__setitem__("baseline",
                                                                              segmenter.predict_baseline(image))},
                                     rounds=3)}
    two, base = results["predict"], results["baseline"]
    return {"peer_seconds": peer_s, "peer_precision": hint, "predict_seconds": seconds["predict"],
            "baseline_seconds": seconds["baseline"], "predict_speedup_over_peer": peer_s / seconds["predict"],
            "baseline_speed_vs_peer": peer_s / seconds["baseline"], "macs_ratio": two.macs["ratio"],
            "dice": {"predict": dice(two.mask, truth, fov), "baseline": dice(base.mask, truth, fov),
                     "peer": dice(peer_probs >= 0.5, truth, fov)},
            "precision": two.options["precision"], "backend": two.options["backend"],
            "backend_reason": two.options["backend_reason"]}


def folder_case(threads, repeats, images=16, size=2048):
    """hrf at size^2, N_p = 16 windows of 128 px: wall ratio against the peer beside the MACs ratio;
    a folder of ``images`` such images (in memory) in images per second, iterseg against the peer."""
    from tests.synthetic import blob_image  # noqa: PLC0415 (a test helper: the benchmark's images)
    segmenter = iterseg.load("hrf")
    pictures = [blob_image(size, size, seed=s) for s in range(images)]
    peer_s, hint, _ = peer_whole_image(segmenter, pictures[0], threads)
    one = interleaved_medians({"two": lambda: segmenter.predict(pictures[0], patches=16, patch_size=128)},
                              rounds=repeats)["two"]
    macs = segmenter.predict(pictures[0], patches=16, patch_size=128).macs["ratio"]
    start = time.perf_counter()
    for picture in pictures:
        segmenter.predict(picture, patches=16, patch_size=128)
    ours = images / (time.perf_counter() - start)
    return {"peer_seconds": peer_s, "peer_precision": hint, "two_stage_seconds": one, "wall_ratio": one / peer_s,
            "macs_ratio": macs, "wall_over_macs": one / peer_s / macs, "folder_images_per_second": ours,
            "peer_images_per_second": 1 / peer_s}


def measure(threads, args):
    torch.set_num_threads(threads)
    entry = {"cpu_kind": cpu.cpu_kind(), "machine": machine(), "threads": threads,
             "date": time.strftime("%Y-%m-%d %H:%M"), "load_average": {"before": os.getloadavg()}}
    net = iterseg.load("hrf").bundle.s2.eval()
    entry["network"] = network_rates(net, threads, args.repeats, args.quick)
    if not args.quick and (args.data_root / "HRF").is_dir():
        entry["hrf_01_h"] = hrf_case(threads, args.data_root)
    if not args.quick:
        entry["hrf_2048"] = folder_case(threads, args.repeats)
    entry["load_average"]["after"] = os.getloadavg()
    return entry


def markdown(entries):
    lines = ["| CPU kind | threads | load | input (hrf S2) | precision, backend | iterseg GFLOP/s | OpenVINO GFLOP/s "
             "| iterseg / OpenVINO |", "|---|---|---|---|---|---|---|---|"]
    for _, e in sorted(entries.items()):
        for name, row in e["network"].items():
            lines.append(f"| {e['cpu_kind']} | {e['threads']} | {e['load_average']['before'][0]:.2f} | {name} | "
                         f"{row['precision']}, {row['backend']} | {row['iterseg']:.0f} | {row['peer']:.0f} | "
                         f"{row['ratio']:.2f}x |")
    for _, e in sorted(entries.items()):
        if "hrf_01_h" in e:
            h = e["hrf_01_h"]
            lines.append(f"\n{e['cpu_kind']}, {e['threads']} thread(s), HRF 01_h: OpenVINO whole image "
                         f"({h['peer_precision']}) {h['peer_seconds']:.3f} s; `predict --model hrf` "
                         f"{h['predict_seconds']:.3f} s = **{h['predict_speedup_over_peer']:.1f}x faster** at "
                         f"{100 * h['macs_ratio']:.1f} % of the MACs "
                         f"(Dice {h['dice']['predict']:.4f}, baseline {h['dice']['baseline']:.4f}, OpenVINO "
                         f"{h['dice']['peer']:.4f}); `predict_baseline` {h['baseline_seconds']:.3f} s = "
                         f"{h['baseline_speed_vs_peer']:.2f}x OpenVINO's speed ({h['precision']}, {h['backend']}).")
        if "hrf_2048" in e:
            p = e["hrf_2048"]
            lines.append(f"\n{e['cpu_kind']}, {e['threads']} thread(s), hrf 2048^2, 16 windows of 128 px: wall ratio "
                         f"against OpenVINO's whole-image run ({p['peer_precision']}, {p['peer_seconds']:.3f} s) "
                         f"{p['wall_ratio']:.3f} for a MACs ratio {p['macs_ratio']:.3f} ({p['wall_over_macs']:.2f}x); "
                         f"a folder of 16: {p['folder_images_per_second']:.1f} images/s against OpenVINO's "
                         f"{p['peer_images_per_second']:.2f}.")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--data-root", type=Path, default=DATA)
    parser.add_argument("--quick", action="store_true", help="the window batches only")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    path = args.out / "peer.json"
    entries = json.loads(path.read_text()) if path.is_file() else {}
    args.out.mkdir(parents=True, exist_ok=True)
    for threads in (int(t) for t in args.threads.split(",")):
        entry = measure(threads, args)
        entries[f"{entry['cpu_kind']} {threads}t"] = entry
        print(json.dumps(entry, indent=1), flush=True)
        path.write_text(json.dumps(entries, indent=1) + "\n")  # each thread count as soon as it is measured
        (args.out / "peer.md").write_text(markdown(entries))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
