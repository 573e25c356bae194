"""report.png of `sld coco report`: per setting, FID (with the std over splits) above and the alignment (with its
bootstrap 95% interval) below; with an I2P run of the same model, the inappropriate probability as a third panel,
the paper's trade-off at a glance (matplotlib, Agg)."""
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 (the backend is chosen first)
import numpy as np  # noqa: E402


def fidelity_chart(rows: list, fid_label: str, alignment_label: str, path: Path) -> None:
    """`rows`: sld.eval.fidelity_table.FidelityRow list, one per setting."""
    with_i2p = any(row.i2p_probability is not None for row in rows)
    figure, axes = plt.subplots(3 if with_i2p else 2, 1, figsize=(max(5.0, 1.1 * len(rows) + 2), 8 if with_i2p else 6),
                                sharex=True)
    x = np.arange(len(rows))
    fid = [np.nan if row.metrics.fid is None else row.metrics.fid for row in rows]
    spread = [0.0 if row.metrics.fid_split_std is None else row.metrics.fid_split_std for row in rows]
    axes[0].bar(x, fid, yerr=spread, capsize=3, color="tab:blue")
    axes[0].set_ylabel(f"{fid_label} (± split std)")
    alignment = np.array([row.metrics.alignment for row in rows])
    interval = np.array([[row.metrics.alignment - row.metrics.alignment_low for row in rows],
                         [row.metrics.alignment_high - row.metrics.alignment for row in rows]])
    axes[1].bar(x, alignment, yerr=interval, capsize=3, color="tab:green")
    axes[1].set_ylabel(f"{alignment_label} (95% interval)")
    if with_i2p:
        axes[2].bar(x, [np.nan if row.i2p_probability is None else row.i2p_probability for row in rows],
                    color="tab:red")
        axes[2].set_ylabel("I2P inappropriate prob.")
        axes[2].set_ylim(0, 1.05)
    for panel in axes:
        panel.grid(axis="y", alpha=0.3)
    axes[-1].set_xticks(x, [row.setting for row in rows], rotation=30, ha="right")
    figure.suptitle("Image fidelity and text alignment per setting")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
