"""Where stage 1, stage 2 and the baseline sit against this CPU's one-thread matmul and memory rates.

    nice python -m benchmarks.roofline [--quick]

Everything runs on ONE thread (torch.set_num_threads(1)), in one process, so the ratios compare
like with like on a shared machine; the load average before and after is recorded with the result
(numbers taken under load are not comparable). Rates are GFLOP/s with 1 MAC = 2 FLOP (the matmul
convention); MACs come from engine/cost.py ``count_macs`` (fvcore, 1 MAC = 1 "flop" there).
Timing: one warm-up call, then the median of --repeats calls.

Measured: one-thread 2048^2 matmul rate per precision (fp32, bf16; 512^2 where bf16 is emulated);
the memory read rate (a NumPy sum over 256 MB); a width-16 depth-4 U-Net (S2-like) on 16 windows
of 64 and of 224 px and on a whole 2048 x 2048 image, as trained ("plain": batch norm, contiguous)
and as the ``auto`` runner runs it (batch norm folded, channels_last); the ph2 bundle's stage 1, stage 2 and baseline at
2048^2 with N_p = 16 and precision auto, and the two-stage wall ratio against its MACs ratio.
Results are merged into benchmarks/results/roofline.json (one entry per CPU kind) and roofline.md.
"""
import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

import iterseg
from iterseg.engine.cost import count_macs
from iterseg.model import cpu
from iterseg.model.runtime import Runner, check_backend, check_precision
from iterseg.model.unet import UNet, UNetConfig

from .peer import peer_network, peer_whole_image
from .timing import machine

RESULTS = Path(__file__).parent / "results"


def median_seconds(fn, repeats):
    """Median wall seconds of ``fn()`` after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_gflops(dtype, repeats, n=2048):
    """GFLOP/s of an n x n matmul (2 n^3 FLOP) in ``dtype``."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    return 2 * n ** 3 / median_seconds(lambda: torch.mm(a, b), repeats) / 1e9


def memory_gbs(repeats, megabytes=256):
    """GB/s of a NumPy float32 sum over ``megabytes`` (read once per call)."""
    data = np.ones(megabytes * 2 ** 18, np.float32)
    return data.nbytes / median_seconds(lambda: data.sum(), repeats) / 1e9


def random_unet(config):
    """A U-Net with non-trivial batch norm statistics (so folding has something to fold)."""
    torch.manual_seed(0)
    model = UNet(config).eval()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return model


def network_rates(model, shapes, repeats):
    """{input: {"plain", "auto", "openvino": GFLOP/s, "macs": MACs}} of ``model`` as trained, as the
    auto runner (precision and backend auto) runs it, and as the peer runs it (OpenVINO, the same
    precision, static shape: benchmarks/peer.py), for (N, h, w) input shapes."""
    runner = Runner(model, "auto", backend=check_backend("auto", "auto"))
    hint = {"fp32": "f32", "bf16": "bf16"}[str(runner.precision)]
    out = {}
    for n, h, w in shapes:
        x = torch.randn(n, model.config.in_channels, h, w)
        macs = n * count_macs(model.config, h, w)
        row = {"macs": macs, "auto_precision": str(runner.precision), "auto_backend": str(runner.backend)}
        peer = peer_network(model, tuple(x.shape), hint, 1)
        with torch.inference_mode():
            for name, network in (("plain", model), ("auto", runner), ("openvino", lambda x, p=peer: p(x.numpy()))):
                row[name] = 2 * macs / median_seconds(lambda net=network, x=x: net(x), repeats) / 1e9
        out[f"{n}x{h}x{w}"] = row
    return out


def two_stage_rates(size, patches, repeats):
    """The ph2 bundle at size^2 (a synthetic image), precision auto, windows of the paper's side (tied:
    size / 16, as the issue measured): stage seconds and GFLOP/s, the
    baseline's, and the two-stage wall ratio against its MACs ratio."""
    from tests.synthetic import blob_image  # noqa: PLC0415 (a test helper: the benchmark's image)

    segmenter = iterseg.load("ph2")  # precision auto
    image = blob_image(size, size, seed=0)
    two = [segmenter.predict(image, patches=patches, patch_size="tied") for _ in range(repeats + 1)][1:]
    base = [segmenter.predict_baseline(image) for _ in range(repeats + 1)][1:]

    def median(results, stage):
        return statistics.median(r.seconds[stage] for r in results)

    macs = two[0].macs
    base_s = median(base, "total")
    result = {"precision": two[0].options["precision"], "precision_reason": two[0].options.get("precision_reason"),
              "seconds": {stage: median(two, stage) for stage in ("stage1", "select", "stage2", "merge", "total")},
              "baseline_seconds": base_s, "macs": macs}
    result["gflops"] = {"stage1": 2 * macs["stage1"] / result["seconds"]["stage1"] / 1e9,
                        "stage2": 2 * macs["stage2"] / result["seconds"]["stage2"] / 1e9,
                        "baseline": 2 * macs["baseline"] / base_s / 1e9}
    result["wall_ratio"] = result["seconds"]["total"] / base_s
    result["wall_over_macs_ratio"] = result["wall_ratio"] / macs["ratio"]
    peer_s, hint, _ = peer_whole_image(segmenter, image, 1)  # the fastest full-resolution run a user could make
    result.update(backend=two[0].options["backend"], peer_seconds=peer_s, peer_precision=hint,
                  wall_ratio_vs_peer=result["seconds"]["total"] / peer_s,
                  wall_over_macs_vs_peer=result["seconds"]["total"] / peer_s / macs["ratio"])
    return result


def measure(args):
    torch.set_num_threads(1)
    load_before = os.getloadavg()
    flags = {f: f in cpu.cpu_flags() for f in ("amx_bf16", "avx512_bf16", "avx2")}
    entry = {"cpu_kind": cpu.cpu_kind(), "flags": flags,
             "machine": machine(), "auto": {"precision": str(check_precision("auto")),
                                            "reason": check_precision("auto").reason},
             "date": time.strftime("%Y-%m-%d %H:%M"), "threads": 1}
    emulated = cpu.lacks_bf16_units()  # bf16 at 0.3 GFLOP/s: a 2048^2 matmul would take a minute
    entry["matmul_gflops"] = {"fp32": matmul_gflops(torch.float32, args.repeats),
                              "bf16": matmul_gflops(torch.bfloat16, 1 if emulated else args.repeats,
                                                    n=512 if emulated else 2048)}
    entry["memory_read_gbs"] = memory_gbs(args.repeats)
    model = random_unet(UNetConfig(3, 1, depth=4, width=16))
    shapes = [(16, 64, 64), (16, 224, 224)] + ([] if args.quick else [(1, args.size, args.size)])
    entry["unet"] = network_rates(model, shapes, args.repeats)
    if not args.quick:
        entry["ph2"] = two_stage_rates(args.size, args.patches, args.repeats)
    entry["load_average"] = {"before": load_before, "after": os.getloadavg()}
    return entry


def peer_sentence(p):
    """Against OpenVINO's whole-image run, for entries that measured it."""
    if "peer_seconds" not in p:
        return ""
    return (f"; against OpenVINO's whole-image run ({p['peer_precision']}, {p['peer_seconds']:.2f} s) the wall "
            f"ratio is {p['wall_ratio_vs_peer']:.3f} ({p['wall_over_macs_vs_peer']:.2f}x the MACs ratio, backend "
            f"{p['backend']})")


def peer_cell(row):
    """The OpenVINO rate and auto's ratio to it, or n/a for entries measured before the peer was."""
    if "openvino" not in row:
        return "n/a | n/a"
    return f"{row['openvino']:.0f} | {row['auto'] / row['openvino']:.2f}x"


def markdown(entries):
    lines = ["| CPU kind | load (1 min) | matmul fp32 / bf16 GFLOP/s | memory GB/s | U-Net input | plain | auto "
             "| auto / matmul | OpenVINO (peer) | auto / OpenVINO |", "|---|---|---|---|---|---|---|---|---|---|"]
    for kind, e in sorted(entries.items()):
        mm = e["matmul_gflops"]
        reference = mm["bf16"] if e["auto"]["precision"] == "bf16" else mm["fp32"]
        for name, row in e["unet"].items():
            lines.append(f"| {kind} | {e['load_average']['before'][0]:.2f} | {mm['fp32']:.0f} / {mm['bf16']:.0f} | "
                         f"{e['memory_read_gbs']:.1f} | {name} | {row['plain']:.0f} | {row['auto']:.0f} | "
                         f"{row['auto'] / reference:.2f}x | {peer_cell(row)} |")
    for kind, e in sorted(entries.items()):
        if "ph2" in e:
            p = e["ph2"]
            lines.append(f"\n{kind}, ph2 at 2048^2, N_p = 16, precision {p['precision']} ({p['precision_reason']}): "
                         f"stage 1 {p['gflops']['stage1']:.0f}, stage 2 {p['gflops']['stage2']:.0f}, baseline "
                         f"{p['gflops']['baseline']:.0f} GFLOP/s; wall ratio {p['wall_ratio']:.3f} for a MACs ratio "
                         f"{p['macs']['ratio']:.3f} ({p['wall_over_macs_ratio']:.2f}x)" + peer_sentence(p) + ".")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--patches", type=int, default=16)
    parser.add_argument("--quick", action="store_true", help="matmul, memory and the window batches only")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    entry = measure(args)
    path = args.out / "roofline.json"
    entries = json.loads(path.read_text()) if path.is_file() else {}
    entries[entry["cpu_kind"]] = entry
    args.out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(entries, indent=1) + "\n")
    (args.out / "roofline.md").write_text(markdown(entries))
    print(json.dumps(entry, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
