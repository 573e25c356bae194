"""The per-setting fidelity metrics against direct computations: FID over all images and over splits, the
alignment mean with its bootstrap interval, and too few images for a covariance."""
import numpy as np
import pytest

from sld.eval.fid import frechet_distance, statistics
from sld.eval.fidelity import bootstrap_interval, fidelity


def test_fidelity_of_one_setting_equals_a_direct_computation():
    rng = np.random.default_rng(0)
    reference = statistics(rng.normal(size=(50, 3)))
    features, alignment = rng.normal(size=(31, 3)) + 0.5, rng.uniform(0, 40, size=31)
    found = fidelity(features, reference, alignment, splits=3, rounds=200, seed=1)
    assert found.images == 31 and found.fid == pytest.approx(frechet_distance(statistics(features), reference))
    parts = [frechet_distance(statistics(features[a:b]), reference) for a, b in ((0, 11), (11, 21), (21, 31))]
    assert found.fid_split_mean == pytest.approx(np.mean(parts)) and found.fid_split_std == pytest.approx(np.std(parts))
    means = alignment[np.random.default_rng(1).integers(0, 31, size=(200, 31))].mean(axis=1)
    assert (found.alignment_low, found.alignment_high) == pytest.approx(tuple(np.percentile(means, [2.5, 97.5])))
    assert found.alignment == pytest.approx(alignment.mean())
    assert found.alignment_low < found.alignment < found.alignment_high


def test_too_few_images_leave_fid_undefined():
    rng = np.random.default_rng(2)
    reference = statistics(rng.normal(size=(50, 3)))
    found = fidelity(rng.normal(size=(10, 3)), reference, np.ones(10), splits=3)
    assert found.fid is not None and found.fid_split_mean is None and found.fid_split_std is None
    assert fidelity(rng.normal(size=(3, 3)), reference, np.ones(3)).fid is None
    assert bootstrap_interval(np.full(5, 2.0), rounds=10, seed=0) == (2.0, 2.0)


def test_table_and_chart_carry_every_number(tmp_path):
    import csv
    import io

    from sld.eval.fidelity import Fidelity
    from sld.eval.fidelity_chart import fidelity_chart
    from sld.eval.fidelity_table import FidelityRow, csv_text, table_lines

    rows = [FidelityRow("none", Fidelity(40, 12.5, 20.25, 1.5, 4, 0.31, 0.29, 0.33), 0.39),
            FidelityRow("max", Fidelity(40, None, None, None, 4, 0.25, 0.2, 0.3), None)]
    parsed = list(csv.DictReader(io.StringIO(csv_text(rows))))
    assert parsed[0] == {"setting": "none", "images": "40", "fid": "12.5", "fid_split_mean": "20.25",
                         "fid_split_std": "1.5", "splits": "4", "alignment": "0.31", "alignment_low": "0.29",
                         "alignment_high": "0.33", "i2p_probability": "0.39"}
    assert parsed[1]["fid"] == "" and parsed[1]["i2p_probability"] == ""
    lines = table_lines(rows, "FID", "CLIP score")
    assert lines[2] == "| none | 40 | 12.50 | 20.25 ± 1.50 (4) | 0.310 | [0.290, 0.330] | 0.390 |"
    assert lines[3] == "| max | 40 | n/a | n/a | 0.250 | [0.200, 0.300] | n/a |"
    fidelity_chart(rows, "FID", "CLIP score", tmp_path / "report.png")
    assert (tmp_path / "report.png").read_bytes()[:4] == b"\x89PNG"
