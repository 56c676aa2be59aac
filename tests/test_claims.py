"""Claims (iterseg/claims.py): one process per image of an output folder, and what a process that
died left behind (its claim, its temporary files) taken over or removed at once by the next one."""
import json
import os
import subprocess
import sys
import time

import pytest

import iterseg
from iterseg import batch, claims
from iterseg.cli import main


def dead_pid():
    """The pid of a process that has exited (and was waited for)."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    return int(done.stdout)


def leave_claim(out, stem, pid, host=claims.HOST, age=0.0):
    """The claim a process ``pid`` on ``host`` would leave on image ``stem``, ``age`` seconds old."""
    path = claims.claim_path(out, stem)
    path.write_text(json.dumps({"pid": pid, "host": host, "time": time.time() - age}), encoding="utf-8")
    os.utime(path, (time.time() - age,) * 2)
    return path


def test_one_claim_per_image_and_a_dead_process_is_succeeded_at_once(tmp_path):
    first, second = claims.Claims(tmp_path), claims.Claims(tmp_path)
    assert first.take("scan") == tmp_path / ".scan.claim"
    assert second.take("scan") is None  # held by a live process (this one)
    record = json.loads((tmp_path / ".scan.claim").read_text())
    assert record["pid"] == os.getpid() and record["host"] == claims.HOST
    first.release("scan")
    assert not (tmp_path / ".scan.claim").exists() and second.take("scan") is not None
    second.close()
    leave_claim(tmp_path, "cut", dead_pid())  # killed with -9: its claim stays
    assert claims.Claims(tmp_path).take("cut") == tmp_path / ".cut.claim.1"  # the next generation
    assert second.take("cut") is None  # generation 1 is alive


def test_a_claim_of_another_host_is_alive_until_untouched_for_long(tmp_path):
    leave_claim(tmp_path, "a", 1, host="elsewhere", age=60)
    leave_claim(tmp_path, "b", 1, host="elsewhere", age=claims.STALE_SECONDS + 60)
    taker = claims.Claims(tmp_path)
    assert taker.take("a") is None and taker.take("b") is not None
    taker.close()
    assert [p.name for p in tmp_path.iterdir()] == [".a.claim"]  # releasing "b" removed its stale generation 0


def partials_of(out, stem):
    return [out / f".{stem}.mask.0123abcd.partial.png", out / f".{stem}.report.89abcdef.partial.json"]


def test_a_rerun_removes_the_temporary_files_of_a_killed_run_at_once(tmp_path, image_path, bundle_path):
    """kill -9 while writing: a claim of a pid that is gone and fresh temporary files; the rerun (CLI)
    removes them at once, while those of a live process's image stay."""
    out = tmp_path / "out"
    out.mkdir()
    leave_claim(out, "blobs", dead_pid())
    leave_claim(out, "other", os.getpid())
    dead, live = partials_of(out, "blobs"), partials_of(out, "other")
    for path in dead + live:
        path.write_bytes(b"half")
    assert main(["predict", str(image_path), "--model", str(bundle_path), "--out", str(out), "--quiet"]) == 0
    assert not any(path.exists() for path in dead) and all(path.exists() for path in live)
    assert (out / "blobs.report.json").is_file() and not list(out.glob(".blobs.claim*"))


def test_a_half_written_ngff_mask_folder_of_a_killed_run_is_removed(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    leave_claim(out, "cells", dead_pid())
    leave_claim(out, "other", os.getpid())
    dead, live = out / ".cells.mask.0123abcd.partial.zarr", out / ".other.mask.0123abcd.partial.zarr"
    for folder in (dead, live):
        (folder / "labels").mkdir(parents=True)
        (folder / "labels" / "zarr.json").write_text("{}")
    assert claims.remove_stale_partials(out) == 1
    assert not dead.exists() and live.is_dir()


def test_a_folder_run_through_the_api_removes_them_too(tmp_path, image_path, bundle_path):
    out = tmp_path / "out"
    out.mkdir()
    leave_claim(out, "blobs", dead_pid())
    dead = partials_of(out, "blobs")
    for path in dead:
        path.write_bytes(b"half")
    rows = batch.predict_files(iterseg.load(bundle_path), [image_path], out, {"patches": 1})
    assert [row["status"] for row in rows] == ["done"] and not any(path.exists() for path in dead)


@pytest.mark.parametrize("overwrite", [False, True])
def test_an_image_claimed_by_a_live_process_is_left_to_it(tmp_path, image_path, bundle_path, capsys, overwrite):
    out = tmp_path / "out"
    out.mkdir()
    leave_claim(out, "blobs", os.getpid())
    assert main(["predict", str(image_path), "--model", str(bundle_path), "--out", str(out)] +
                (["--overwrite"] if overwrite else [])) == 0
    assert "another process is segmenting it" in capsys.readouterr().err
    assert not (out / "blobs.report.json").exists()
    rows = batch.predict_files(iterseg.load(bundle_path), [image_path], out, {}, overwrite=overwrite)
    assert rows == [] and not (out / "blobs.report.json").exists()


def test_the_end_of_a_run_counts_the_images_left_to_other_processes(tmp_path, image_path, bundle_path, capsys):
    other = image_path.with_name("other.png")
    other.write_bytes(image_path.read_bytes())
    out = tmp_path / "out"
    out.mkdir()
    leave_claim(out, "other", os.getpid())
    assert main(["predict", str(image_path), str(other), "--model", str(bundle_path), "--out", str(out)]) == 0
    assert "2 images: 1 done, 0 skipped (outputs exist), 0 failed, 1 left to other processes" in capsys.readouterr().err


def test_an_image_done_by_another_process_after_the_skip_check_is_a_skipped_row(tmp_path, image_path, bundle_path,
                                                                                 monkeypatch):
    """A task of an interrupted cluster run can finish an image after its client has gone: the rerun
    finds the report only when it claims the image. The image is a skipped row (in the rows and in the
    summary), not dropped as if a live process still had it."""
    out = tmp_path / "out"
    segmenter = iterseg.load(bundle_path)
    batch.predict_files(segmenter, [image_path], out, {"patches": 1})
    report = out / "blobs.report.json"
    aside = report.rename(tmp_path / "aside.json")
    take = claims.Claims.take

    def take_after_the_other_finished(self, stem):
        aside.rename(report)  # the other process writes its report just now
        return take(self, stem)

    monkeypatch.setattr(claims.Claims, "take", take_after_the_other_finished)
    rows = batch.predict_files(segmenter, [image_path], out, {"patches": 1}, summary_path=out / "summary.csv")
    assert [row["status"] for row in rows] == ["skipped"] and rows[0]["windows"] == 1
    summary = (out / "summary.csv").read_text().splitlines()
    assert len(summary) == 2 and ",skipped," in summary[1]
    assert not list(out.glob(".blobs.claim*"))
