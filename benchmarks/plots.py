"""Plot of a sweep report: Dice and boundary F1 against the MACs ratio (log axis), one curve per method."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the file-only backend)

STYLES = {  # (method, precision) -> matplotlib style
    ("two-stage/mean", "fp32"): dict(color="C0", marker="o", label="two-stage, score mean (the paper's)"),
    ("two-stage/uncertainty", "fp32"): dict(color="C1", marker="s", label="two-stage, uncertainty"),
    ("two-stage/mean", "bf16"): dict(color="C0", marker=".", linestyle=":", label="two-stage, bf16"),
    ("random", "fp32"): dict(color="C3", marker="x", linestyle="--", label="random windows"),
    ("oracle", "fp32"): dict(color="k", marker="*", markersize=5, linestyle="-.",
                             label="oracle windows (where stage 1 is most wrong)"),
    ("previous/mean", "fp32"): dict(color="C8", marker="o", markersize=4, linestyle="--",
                                    label="two-stage, the previous stage 1 (same S2)"),
    ("downscale", "fp32"): dict(color="C2", marker="^", linestyle="--", label="equal-cost downscaling"),
    ("iterative/R2", "fp32"): dict(color="C4", marker="D", markersize=4, label="iterative, 2 rounds"),
    ("iterative/R3", "fp32"): dict(color="C5", marker="v", markersize=4, label="iterative, 3 rounds"),
    ("sliding/half", "fp32"): dict(color="C6", marker="P", markersize=5, label="sliding, stride L/2 + NMS"),
    ("sliding/half-R3", "fp32"): dict(color="C7", marker="X", markersize=5, linestyle=":",
                                      label="sliding, 3 rounds"),
    ("conditioned/mean", "fp32"): dict(color="C9", marker="*", markersize=7, linewidth=2,
                                       label="two-stage, S2 conditioned on S1"),
}


def _curve(summary, method, precision, metric):
    points = sorted((s["macs_ratio"], s[metric], s["patches"]) for s in summary
                    if s["method"] == method and s["precision"] == precision)
    return [p[0] for p in points], [p[1] for p in points], [p[2] for p in points]


def _panel(axis, report, metric, label):
    summary = report["summary"]
    for (method, precision), style in STYLES.items():
        x, y, n = _curve(summary, method, precision, metric)
        if x:
            axis.plot(x, y, **style)
            if (method, precision) == ("two-stage/mean", "fp32"):
                for xi, yi, ni in zip(x, y, n, strict=True):
                    axis.annotate(f"{ni}", (xi, yi), textcoords="offset points", xytext=(3, -10), fontsize=7)
    base = next(s for s in summary if s["method"] == "baseline" and s["precision"] == "fp32")
    axis.plot([base["macs_ratio"]], [base[metric]], "k*", markersize=12, label="baseline (full resolution)")
    conditioned = next((s for s in summary if s["method"] == "conditioned/baseline"), None)
    if conditioned:
        axis.plot([conditioned["macs_ratio"]], [conditioned[metric]], "*", color="C9", markeredgecolor="k",
                  markersize=12, label="conditioned baseline (S1 + conditioned S2, whole image)")
    axis.axhline(base[metric], color="k", linewidth=0.6, linestyle=":")
    axis.axhline(0.99 * base[metric], color="grey", linewidth=0.6, linestyle="--", label="99 % of baseline")
    axis.set_xscale("log")
    axis.set_xlabel("MACs / baseline MACs (log)")
    axis.set_ylabel(label)
    axis.grid(True, which="both", alpha=0.3)


def plot_sweep(report, path):
    """Write the two-panel figure of ``report`` (a sweep JSON dict) to ``path`` as PNG."""
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    _panel(axes[0], report, "dice", "Dice")
    _panel(axes[1], report, "boundary_f1", "boundary F1 (2 px)")
    axes[0].legend(fontsize=8, loc="lower right")
    figure.suptitle(f"{report['dataset']}: {report['images']} test images, model {report['model']}, "
                    f"{report['grid']}x{report['grid']} window grid; numbers = N_p")
    figure.tight_layout()
    figure.savefig(path, dpi=110, format="png")
    plt.close(figure)
