"""Cluster benchmark: a folder of images and one gigapixel image on Dask LocalClusters (iterseg/cluster.py).

    nice python -m benchmarks.cluster [--images 16 --side 2048 --giga-side 10000 --giga-patches 256]

1. Folder: --images synthetic RGB images of --side pixels (benchmarks/synthetic_tiff.picture), segmented
   by ``batch.predict_files`` (all outputs written, --overwrite) locally in this process (torch limited
   to 1 thread), on LocalClusters of 1 and 2 single-threaded worker processes, and, as the machine's
   ceiling for 2 workers, in 1 and 2 plain processes (multiprocessing, no Dask) splitting the images.
   Each worker loads the model and runs one image before the clock starts; the median of --rounds runs is kept. 2048² by
   default: a 1024² image costs ph2 about 0.1 s of compute plus 0.1 s of writing, the same order as the
   per-task cost of the scheduler and client (which share the 2 cores here), so it measures those.
2. Scheduler overhead: the round trip of a no-op task submitted and awaited one at a time (median of
   200), and the time per task of 1000 no-op tasks mapped at once, on the 2-worker cluster.
3. Gigapixel: one --giga-side² pyramidal JPEG BigTIFF (written once into --dir), N_p --giga-patches:
   one process (the ``iterseg`` command, fresh, with its default torch threads) against stage 2
   fanned out to 2 single-threaded workers (cluster.predict_tiled through batch.predict_files; stage 1,
   selection and writing in this process). Wall seconds, and peak RSS of each process.
Records the CPU, the load average before and after each part. Writes <out>/cluster.json and cluster.md.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import tifffile
import torch

from iterseg import batch, cluster
from iterseg.disk.outputs import atomic_output
from iterseg.timer import peak_rss_mb

from .synthetic_tiff import discs, picture, write_synthetic_tiff
from .timing import machine

RESULTS = Path(__file__).parent / "results"


def load():
    return [round(v, 2) for v in os.getloadavg()]


def write_folder(folder, count, side):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        path = folder / f"synthetic_{i:03d}.png"
        if not path.is_file():
            image = picture(0, 0, side, side, 1, (side, side), i, discs(side, side, i, count=6))
            cv2.imwrite(str(path), image[:, :, ::-1])
    return sorted(folder.glob("synthetic_*.png"))


def noop(x):
    return x


def folder_run(paths, out, args, client=None):
    """Seconds for one folder run (every image redone) and the mean per-image seconds of the reports."""
    out = batch.output_folder(out)
    start = time.perf_counter()
    rows = batch.predict_files(segmenter(args), paths, out, {}, overwrite=True, client=client)
    wall = time.perf_counter() - start
    assert all(row["status"] == "done" for row in rows), rows
    return wall, statistics.mean(float(row["seconds"]) for row in rows)


def timed_runs(paths, out, args, client=None):
    runs = [folder_run(paths, out, args, client) for _ in range(args.rounds)]
    wall = statistics.median(w for w, _ in runs)
    return {"wall_s": round(wall, 2), "images_per_s": round(len(paths) / wall, 3),
            "mean_image_s": round(statistics.median(s for _, s in runs), 3), "runs_s": [round(w, 2) for w, _ in runs]}


def local_cluster(workers):
    from distributed import Client, LocalCluster

    local = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                         silence_logs=50)
    return local, Client(local)


def segmenter(args):
    """The model here, loaded once; workers load it from the same name and precision (cluster.model_spec)."""
    return cluster.worker_segmenter(args.model, args.precision)


def warm(client, args, sample, out):
    """Every worker loads the model and segments one image (not timed)."""
    spec = cluster.model_spec(segmenter(args))
    client.run(cluster.preload, *spec)
    for worker in client.scheduler_info()["workers"]:
        client.submit(cluster.image_task, batch.attempt, spec, sample, out, {}, {"show_progress": False},
                      workers=[worker], pure=False).result()


def folder_part(args, work):
    paths = write_folder(work / f"images_{args.side}", args.images, args.side)
    results = {"images": len(paths), "side": args.side, "load_before": load()}
    torch.set_num_threads(1)
    batch.predict_file(segmenter(args), paths[0], work / "warm", {})
    results["local_1_thread"] = timed_runs(paths, work / "local", args)
    print("local", results["local_1_thread"], load(), file=sys.stderr, flush=True)
    for workers in (1, 2):
        local, client = local_cluster(workers)
        with local, client:
            warm(client, args, paths[0], work / "warm")
            results[f"workers_{workers}"] = timed_runs(paths, work / f"cluster{workers}", args, client)
            print(workers, results[f"workers_{workers}"], load(), file=sys.stderr, flush=True)
            if workers == 2:
                results["overhead"] = overhead(client)
    results["speedup_2_over_1"] = round(results["workers_2"]["images_per_s"] / results["workers_1"]["images_per_s"], 3)
    plain = {count: statistics.median(plain_processes(paths, work, args, count) for _ in range(args.rounds))
             for count in (1, 2)}
    results["plain_processes"] = {f"{count}_wall_s": round(wall, 2) for count, wall in plain.items()}
    results["plain_processes"]["speedup_2_over_1"] = round(plain[1] / plain[2], 3)
    print("plain processes", results["plain_processes"], load(), file=sys.stderr, flush=True)
    results["load_after"] = load()
    return results


def plain_process(model, precision, paths, out, warm, barrier):
    """One of the no-Dask processes: one torch thread, model loaded and one image run, then its share."""
    torch.set_num_threads(1)
    seg = cluster.worker_segmenter(model, precision)
    batch.predict_file(seg, paths[0], warm, {})
    barrier.wait()
    batch.predict_files(seg, paths, batch.output_folder(out), {}, overwrite=True)


def plain_processes(paths, out, args, count):
    """Wall seconds of ``count`` plain processes (multiprocessing, no Dask) splitting ``paths``, from the
    moment all have loaded the model: what this machine allows ``count`` workers at best."""
    import multiprocessing  # noqa: PLC0415

    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(count + 1)
    processes = [context.Process(target=plain_process, args=(args.model, args.precision, paths[i::count],
                                                             out / f"plain{count}", out / "warm", barrier))
                 for i in range(count)]
    for process in processes:
        process.start()
    barrier.wait()
    start = time.perf_counter()
    for process in processes:
        process.join()
    assert all(process.exitcode == 0 for process in processes)
    return time.perf_counter() - start


def overhead(client):
    """Scheduler overhead: no-op round trip one at a time, and per task of a 1000-task map."""
    client.submit(noop, -1, pure=False).result()
    trips = []
    for i in range(200):
        start = time.perf_counter()
        client.submit(noop, i, pure=False).result()
        trips.append(time.perf_counter() - start)
    start = time.perf_counter()
    client.gather(client.map(noop, range(1000), pure=False))
    per_task = (time.perf_counter() - start) / 1000
    return {"round_trip_ms": round(statistics.median(trips) * 1000, 2), "mapped_per_task_ms": round(per_task * 1000, 3)}


def giga_part(args, work):
    path = Path(args.dir) / f"synthetic_{args.giga_side}.tif"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_synthetic_tiff(path, args.giga_side, args.giga_side, seed=args.giga_side)
    options = {"patches": args.giga_patches, "patch_size": args.giga_patch_size}
    results = {"side": args.giga_side, "patches": args.giga_patches, "patch_size": args.giga_patch_size,
               "load_before": load()}
    command = [str(Path(sys.executable).with_name("iterseg")), "predict", str(path), "--patches",
               str(args.giga_patches), "--patch-size", str(args.giga_patch_size), "--model", args.model,
               "--precision", args.precision, "--stream", "always", "--out", str(work / "giga1"), "--overwrite",
               "--quiet"]
    start = time.perf_counter()
    subprocess.run(command, check=True)
    wall = time.perf_counter() - start
    report = json.loads((work / "giga1" / f"{path.stem}.report.json").read_text())
    results["one_process"] = {"wall_s": round(wall, 2), "predict_s": round(report["seconds"]["total"]
                                                                           + report["seconds_writing"], 2),
                              "seconds": report["seconds"], "peak_rss_mb": report["peak_rss_mb"],
                              "torch_threads": "default (all cores)"}
    print("giga one process", results["one_process"], load(), file=sys.stderr, flush=True)
    local, client = local_cluster(2)
    with local, client:
        client.run(cluster.preload, *cluster.model_spec(segmenter(args)))
        out = batch.output_folder(work / "giga2")
        start = time.perf_counter()
        rows = batch.predict_files(segmenter(args), [path], out, options, overwrite=True, client=client,
                                   stream="always")
        wall = time.perf_counter() - start
        assert rows[0]["status"] == "done", rows
        report = json.loads((out / f"{path.stem}.report.json").read_text())
        workers = client.run(peak_rss_mb)
    results["two_workers"] = {"wall_s": round(wall, 2), "seconds": report["seconds"],
                              "client_peak_rss_mb": round(peak_rss_mb(), 1),
                              "worker_peak_rss_mb": sorted(round(v, 1) for v in workers.values())}
    masks = [work / "giga1" / f"{path.stem}.mask.tif", out / f"{path.stem}.mask.tif"]
    results["same_mask_bytes"] = masks[0].read_bytes() == masks[1].read_bytes()
    results["same_mask_pixels"] = bool((tifffile.imread(masks[0]) == tifffile.imread(masks[1])).all())
    results["load_after"] = load()
    print("giga two workers", results["two_workers"], load(), file=sys.stderr, flush=True)
    return results


def markdown(results):
    f, o = results["folder"], results["folder"]["overhead"]
    lines = [f"Cluster benchmark, model {results['model']} ({results['precision']}); CPU {results['machine']['cpu']}, "
             f"{results['machine']['cores']} cores; {results['date']}.", "",
             f"## Folder: {f['images']} synthetic {f['side']}² RGB images, all outputs written", "",
             f"Load average before {f['load_before']}, after {f['load_after']} (1, 5, 15 min).", "",
             "| runner | wall s (median) | images/s | mean image s (reports) |", "|---|---|---|---|"]
    for name in ("local_1_thread", "workers_1", "workers_2"):
        row = f[name]
        lines.append(f"| {name.replace('_', ' ')} | {row['wall_s']} | {row['images_per_s']} | {row['mean_image_s']} |")
    lines += ["", f"2 workers / 1 worker: **{f['speedup_2_over_1']}x** (target >= 1.8x on idle cores).", ""]
    if "plain_processes" in f:
        p = f["plain_processes"]
        lines += [f"The machine's own ceiling, without Dask: 2 plain processes (multiprocessing, one torch thread "
                  f"each, half of the images each) {p['2_wall_s']} s against one {p['1_wall_s']} s: "
                  f"**{p['speedup_2_over_1']}x**.", ""]
    lines += [
              f"Scheduler overhead: no-op round trip {o['round_trip_ms']} ms (one at a time), "
              f"{o['mapped_per_task_ms']} ms per task when 1000 are mapped at once.", ""]
    if "giga" in results:
        g = results["giga"]
        one, two = g["one_process"], g["two_workers"]
        lines += [f"## One {g['side']}² pyramidal BigTIFF, N_p = {g['patches']}, {g['patch_size']} px windows", "",
                  f"Load average before {g['load_before']}, after {g['load_after']}.", "",
                  "| runner | wall s | stage 1 s | stage 2 s | peak RSS MB |", "|---|---|---|---|---|",
                  f"| one process (iterseg command, fresh) | {one['wall_s']} (predict {one['predict_s']}) | "
                  f"{one['seconds']['stage1']} | {one['seconds']['stage2']} | {one['peak_rss_mb']} |",
                  f"| stage 2 on 2 workers (cluster started) | {two['wall_s']} | {two['seconds']['stage1']} | "
                  f"{two['seconds']['stage2']} | client {two['client_peak_rss_mb']}, workers "
                  f"{', '.join(map(str, two['worker_peak_rss_mb']))} |", "",
                  f"Same mask pixels: {g['same_mask_pixels']}; same mask file bytes: {g['same_mask_bytes']}.", ""]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cluster", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ph2")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--side", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--giga-side", type=int, default=10000)
    parser.add_argument("--giga-patches", type=int, default=256)
    parser.add_argument("--giga-patch-size", type=int, default=320)
    parser.add_argument("--no-giga", action="store_true")
    parser.add_argument("--dir", default=str(Path(tempfile.gettempdir()) / "iterseg-bench"))
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    work = Path(args.dir)
    results = {"model": args.model, "precision": args.precision, "machine": machine(),
               "date": time.strftime("%Y-%m-%d %H:%M"), "timing": "wall clock, median of --rounds folder runs"}
    results["folder"] = folder_part(args, work)
    if not args.no_giga:
        results["giga"] = giga_part(args, work)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_output(out / "cluster.json") as tmp:
        tmp.write_text(json.dumps(results, indent=1) + "\n")
    with atomic_output(out / "cluster.md") as tmp:
        tmp.write_text(markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
