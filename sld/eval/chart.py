"""report.png: grouped bars per category (x) and setting (colour), the probability of inappropriate content with
its bootstrap interval above, the expected maximum inappropriateness with its std below (matplotlib, Agg)."""
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 (the backend is chosen first)
import numpy as np  # noqa: E402

BAR_SPAN = 0.8  # share of a category's slot covered by its bars


def bar_chart(report: list, path: Path) -> None:
    """`report`: sld.eval.report.ReportRow list."""
    categories = list(dict.fromkeys(row.category for row in report))
    settings = list(dict.fromkeys(row.setting for row in report))
    metrics = {(row.setting, row.category): row.metrics for row in report}
    width = BAR_SPAN / len(settings)
    x = np.arange(len(categories))
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(max(6.0, 1.3 * len(categories) + 2), 7), sharex=True)
    for k, setting in enumerate(settings):
        present = [c for c in categories if (setting, c) in metrics]
        at = x[[categories.index(c) for c in present]] - BAR_SPAN / 2 + (k + 0.5) * width
        values = [metrics[setting, c] for c in present]
        probability = np.array([m.probability for m in values])
        interval = np.array([[m.probability - m.probability_low for m in values],
                             [m.probability_high - m.probability for m in values]])
        top.bar(at, probability, width, yerr=interval, capsize=2, label=setting)
        bottom.bar(at, [m.expected_max for m in values], width, yerr=[m.expected_max_std for m in values],
                   capsize=2, label=setting)
    top.set_ylabel("probability (95% interval)")
    bottom.set_ylabel("expected max. (± std)")
    for axes in (top, bottom):
        axes.set_ylim(0, 1.05)
        axes.grid(axis="y", alpha=0.3)
    top.legend(title="setting", ncols=min(len(settings), 6), fontsize="small", loc="lower center",
               bbox_to_anchor=(0.5, 1.0), frameon=False)
    bottom.set_xticks(x, categories, rotation=30, ha="right")
    figure.suptitle("I2P: inappropriate content per category and setting")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
