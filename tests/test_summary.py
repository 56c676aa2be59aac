"""summary.csv (iterseg/summary.py): the rows of many processes merged, one per image, none lost."""
from iterseg import summary


def test_rows_of_many_processes_merge_into_one_per_image(tmp_path):
    first, second = summary.Shard(tmp_path), summary.Shard(tmp_path)
    first.append([summary.summary_row("a.png", "failed", "cannot decode"), summary.summary_row("b.png", "done")])
    second.append([summary.summary_row("a.png", "done"), summary.summary_row("c.png", "done")])
    first.append([summary.summary_row("b.png", "skipped", "b.report.json exists")])  # never hides the work
    with open(first.path, "a", encoding="utf-8") as handle:
        handle.write('{"image": "d.png", "sta')  # a process killed while appending
    rows = summary.write_merged(tmp_path / "summary.csv")
    assert [(row["image"], row["status"]) for row in rows] == [("a.png", "done"), ("b.png", "done"), ("c.png", "done")]
    assert list(summary.read_summary(tmp_path / "summary.csv")) == ["a.png", "b.png", "c.png"]


def test_an_earlier_summary_counts_as_older_than_any_shard(tmp_path):
    path = tmp_path / "summary.csv"
    summary.write_summary(path, [summary.summary_row("old.png", "done"), summary.summary_row("a.png", "failed", "x")])
    summary.Shard(tmp_path).append([summary.summary_row("a.png", "done")])
    assert {row["image"]: row["status"] for row in summary.write_merged(path)} == {"a.png": "done", "old.png": "done"}
