"""Model cards: what a bundle does, on what it was trained, how well and at what cost, for ``iterseg
models`` and ``Segmenter.card()``.

Everything a bundle records is read from it: the dataset and data spec (``provenance``), the window
count chosen from its sweep with that sweep's test Dice, share of the baseline's Dice and MACs ratio
(``provenance["default"]``), stage-1 scale and window side. What a bundle cannot record about its data
(what the images are, their size, the data's licence) is in DATASETS, keyed by the dataset name; a
bundle trained on other data shows '-' there.
"""
from importlib import resources
from pathlib import Path

from .engine.settings import resolve_patches

DATASETS = {  # from /work/shared/data/README.md and iterseg/weights/README.md
    "ph2": {"input": "dermoscopy photo", "image_size": "761-769 x 553-577",
            "data": "PH2, 140 train / 60 test",
            "licence": "free for research use; cite Mendonca et al., EMBC 2013"},
    "drive": {"input": "fundus photo", "image_size": "565 x 584",
              "data": "DRIVE, 20 train / 20 test",
              "licence": "free for research use; cite Staal et al., IEEE TMI 2004"},
    "hrf": {"input": "fundus photo", "image_size": "3504 x 2336",
            "data": "HRF, 29 train / 13 test",
            "licence": "free for research use; cite Budai et al., Int. J. Biomed. Imaging 2013"},
}


def spec_task(spec_name):
    """The ``task`` line of a shipped data spec (e.g. 'ph2.yaml'), or None."""
    import yaml
    try:
        text = (resources.files("iterseg.data_specs") / str(spec_name)).read_text(encoding="utf-8")
        return yaml.safe_load(text).get("task")
    except (OSError, ValueError, AttributeError, yaml.YAMLError):
        return None


def model_card(bundle, path=None):
    """JSON-ready dict describing ``bundle``: name, task, input, image_size (W x H), data, licence,
    test_dice, default (windows, window side, context, share of the baseline's Dice and MACs ratio on
    the test split, the report they come from, Dice on the validation images that chose it),
    s1_scale, mpp (µm per pixel trained at, if recorded), classes, file_mb (when ``path`` is a file).
    Missing values are None."""
    provenance = bundle.provenance or {}
    dataset = str(provenance.get("dataset", "")).lower()
    known = DATASETS.get(dataset, {})
    default = provenance.get("default", {})
    tested = provenance.get("test", {})  # the test split at the default (benchmarks/defaults.py --test-report)
    classes = list(bundle.class_names)
    task = spec_task(provenance["spec"]) if provenance.get("spec") else None
    if bundle.untrained:
        task = "none (random weights)"
    size = Path(path).stat().st_size / 2 ** 20 if path is not None and Path(path).is_file() else None
    return {
        "name": bundle.name, "task": task or (f"{len(classes)} classes" if classes else None),
        "input": known.get("input"), "image_size": known.get("image_size"),
        "data": known.get("data") or (dataset or None), "licence": known.get("licence"),
        "test_dice": tested.get("dice"),
        "default": {"windows": bundle.patches, "window": bundle.window,
                    "context": bundle.context, "of_baseline_dice": tested.get("of_baseline"),
                    "macs_ratio": tested.get("macs_ratio", default.get("macs_ratio")),
                    "sweep": tested.get("report"), "validation_dice": default.get("dice")},
        "s1_scale": bundle.s1_scale, "mpp": bundle.mpp, "classes": classes,
        "file_mb": None if size is None else round(size, 1),
    }


def _cost(card):
    default = card["default"]
    windows = "N_p rule" if default["window"] is None else f"{default['window']} px"
    count = str(resolve_patches(default["windows"]))
    text = f"{count} x {windows}" + (f" (+{default['context']} px context)" if default.get("context") else "")
    if default["macs_ratio"] is not None:
        text += f": {100 * default['macs_ratio']:.1f} % MACs"
    if default["of_baseline_dice"] is not None:
        text += f", {100 * default['of_baseline_dice']:.1f} % Dice"
    return text


COLUMNS = (("name", 9), ("task", 24), ("input", 17), ("W x H trained", 17), ("training data", 24),
           ("test Dice", 9), ("default cost (of the baseline)", 30), ("file", 7))


def card_rows(cards):
    """The table of ``cards``: a header row, then one row per card (lists of strings)."""
    rows = [[name for name, _ in COLUMNS]]
    for card in cards:
        dice = "-" if card["test_dice"] is None else f"{card['test_dice']:.3f}"
        rows.append([card["name"], card["task"] or "-", card["input"] or "-", card["image_size"] or "-",
                     card["data"] or "-", dice, _cost(card),
                     "-" if card["file_mb"] is None else f"{card['file_mb']:.1f} MB"])
    return rows


def card_table(cards):
    """Text table of ``cards`` and, under it, the licence of each dataset they were trained on."""
    rows = card_rows(cards)
    widths = [max(width, *(len(row[i]) for row in rows)) for i, (_, width) in enumerate(COLUMNS)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    licences = {card["data"].split(",")[0]: card["licence"] for card in cards if card["licence"]}
    lines += [""] + [f"{data} licence: {text}" for data, text in licences.items()]
    lines += ["test Dice: the dataset's test split at the default setting. default cost: windows refined x their "
              "side,", "  MACs and Dice as shares of the full-resolution model's (the model's sweep in "
              "benchmarks/results)."]
    return "\n".join(lines)
