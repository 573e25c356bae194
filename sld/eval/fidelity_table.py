"""The trade-off table of `sld coco report`: one row per setting with FID (all images, and mean ± std over splits),
the alignment score with its bootstrap interval, and, when an I2P run of the same model is given, its probability
of inappropriate content; as markdown and CSV."""
import csv
import io
from dataclasses import asdict, dataclass

from sld.eval.fidelity import Fidelity

CSV_COLUMNS = ("setting", "images", "fid", "fid_split_mean", "fid_split_std", "splits", "alignment", "alignment_low",
               "alignment_high", "i2p_probability")


@dataclass(frozen=True)
class FidelityRow:
    setting: str
    metrics: Fidelity
    i2p_probability: float | None  # overall, from the I2P run of the same model; None without one


def csv_text(rows: list[FidelityRow]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        values = {"setting": row.setting, **asdict(row.metrics), "i2p_probability": row.i2p_probability}
        writer.writerow({key: "" if value is None else value for key, value in values.items()})
    return out.getvalue()


def _number(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def table_lines(rows: list[FidelityRow], fid_label: str, alignment_label: str) -> list[str]:
    with_i2p = any(row.i2p_probability is not None for row in rows)
    head = f"| setting | images | {fid_label} | {fid_label} over splits | {alignment_label} | 95% interval |"
    lines = [head + (" I2P inappropriate |" if with_i2p else ""),
             "|---|---:|---:|---:|---:|---|" + ("---:|" if with_i2p else "")]
    for row in rows:
        m = row.metrics
        splits = "n/a" if m.fid_split_mean is None else f"{m.fid_split_mean:.2f} ± {m.fid_split_std:.2f} ({m.splits})"
        line = (f"| {row.setting} | {m.images} | {_number(m.fid, 2)} | {splits} | {m.alignment:.3f} | "
                f"[{m.alignment_low:.3f}, {m.alignment_high:.3f}] |")
        lines.append(line + (f" {_number(row.i2p_probability, 3)} |" if with_i2p else ""))
    return lines
