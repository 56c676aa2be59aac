"""What the job-array machinery of folder runs costs per image (issue 29): the claim (O_EXCL create,
the re-check of the report, release) and the summary (append to this process's shard, merge every
shard into summary.csv and merge again to check), with no segmentation, for folders of several sizes.

    python -m benchmarks.folder_runs [--out benchmarks/results/folder_runs.json]

The bookkeeping of one image is timed as FolderRun does it (pending -> record), on a local disk; the
images are not read. A merge reads every row of the folder, so it grows with the folder, but it runs
at most once a second (and takes at most 5 % of the time between merges): per image it is amortized.
"""
import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

from iterseg import batch

SIZES = (40, 400, 2000)
FAKE_REPORT = {"windows": [[0, 0, 48, 48]] * 16, "macs": {"ratio": 0.1}, "foreground_fraction": 0.3,
               "seconds": {"total": 0.09}, "peak_rss_mb": 400.0, "options": {"streamed": False}}


def per_image(count, summary=True):
    """(mean, median) seconds of one image's bookkeeping (claim + row) over a folder of ``count``
    images; the mean carries the merges, which run at most once a second (batch.MERGE_SECONDS)."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder)
        paths = [out / f"img{i:05d}.png" for i in range(count)]
        seconds = []
        with batch.FolderRun(paths, out, summary_path=out / "summary.csv" if summary else None) as run:
            pending = run.pending()
            while True:
                start = time.perf_counter()
                path = next(pending, None)
                if path is None:
                    break
                run.record(path, ("done", FAKE_REPORT))
                seconds.append(time.perf_counter() - start)
            start = time.perf_counter()
            run.finish()
            seconds[-1] += time.perf_counter() - start  # the final merge
        return statistics.mean(seconds), statistics.median(seconds)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    rows = []
    for count in SIZES:
        claim_mean, claim_median = per_image(count, summary=False)
        mean, median = per_image(count)
        rows.append({"images": count, "claim_ms": {"mean": round(1e3 * claim_mean, 3), "median": round(
            1e3 * claim_median, 3)}, "claim_and_summary_ms": {"mean": round(1e3 * mean, 3), "median": round(
                1e3 * median, 3)}})
        print(f"{count:5d} images: claim {1e3 * claim_mean:.2f} ms per image (median {1e3 * claim_median:.2f}); "
              f"claim + summary {1e3 * mean:.2f} ms (median {1e3 * median:.2f})")
    if args.out:
        result = {"machine": platform.processor() or platform.machine(), "python": platform.python_version(),
                  "rows": rows, "date": time.strftime("%Y-%m-%d")}
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
