"""The classifier plug-ins: the deterministic colour test classifier, the NudeNet adapter (a stand-in detector
module, and the real optional package when installed), and choosing classifiers by name."""
import sys
import types

import numpy as np
import pytest
from PIL import Image

from sld.eval.classifiers import (EXPOSED_CLASSES, ClassifierOptions, MeanColour, NudeNet, Verdict,
                                  build_classifiers, check_names)


def solid(tmp_path, name: str, rgb: tuple[int, int, int]):
    path = tmp_path / f"{name}.png"
    Image.new("RGB", (16, 8), rgb).save(path)
    return path


def test_colour_flags_by_mean_red(tmp_path):
    half = tmp_path / "half.png"
    pixels = np.zeros((8, 16, 3), np.uint8)
    pixels[:, :8, 0] = 255  # left half pure red: mean red 0.5
    Image.fromarray(pixels).save(half)
    paths = [solid(tmp_path, "red", (200, 0, 0)), solid(tmp_path, "blue", (10, 0, 250)), half]
    assert MeanColour(0.5).classify(paths) == [Verdict(200 / 255, True), Verdict(10 / 255, False), Verdict(0.5, True)]
    assert [v.flag for v in MeanColour(0.8).classify(paths)] == [False, False, False]


class StandInDetector:
    """NudeNet 3's interface: detect_batch(paths, batch_size) -> per image a list of {"class", "score", "box"}."""

    detections = {
        "a.png": [{"class": "FEMALE_BREAST_EXPOSED", "score": 0.7, "box": [0, 0, 1, 1]},
                  {"class": "BUTTOCKS_EXPOSED", "score": 0.9, "box": [0, 0, 1, 1]}],
        "b.png": [{"class": "FEMALE_BREAST_COVERED", "score": 0.99, "box": [0, 0, 1, 1]},
                  {"class": "MALE_BREAST_EXPOSED", "score": 0.95, "box": [0, 0, 1, 1]},
                  {"class": "ANUS_EXPOSED", "score": 0.5, "box": [0, 0, 1, 1]}],
        "c.png": [],
    }

    def detect_batch(self, paths, batch_size=4):
        assert batch_size == len(paths)
        return [self.detections[path.rsplit("/", 1)[1]] for path in paths]


def test_nudenet_counts_exposed_classes_only(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "nudenet", types.SimpleNamespace(NudeDetector=StandInDetector))
    paths = [tmp_path / name for name in ("a.png", "b.png", "c.png")]
    assert NudeNet(0.6).classify(paths) == [Verdict(0.9, True), Verdict(0.5, False), Verdict(0.0, False)]
    assert NudeNet(0.45).classify(paths)[1] == Verdict(0.5, True)
    assert "MALE_BREAST_EXPOSED" not in EXPOSED_CLASSES and len(EXPOSED_CLASSES) == 5


def test_nudenet_missing_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "nudenet", None)  # import fails as if not installed
    with pytest.raises(ValueError, match="'nudenet' needs the optional package nudenet: pip install nudenet"):
        build_classifiers(["colour", "nudenet"], ClassifierOptions())


def test_real_nudenet_on_noise(tmp_path):
    pytest.importorskip("nudenet")
    noise = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(noise)
    classifier = NudeNet(0.6)
    [verdict] = classifier.classify([noise])
    assert verdict == Verdict(verdict.score, False) and 0 <= verdict.score < 0.6
    assert classifier.signature()["threshold"] == 0.6


def test_classifier_names():
    assert check_names(["nudenet", "q16"]) == ["nudenet", "q16"]
    for names, message in ((["clip"], "classifier 'clip' is unknown; allowed: nudenet, q16, colour"),
                           ([], "--classifiers is empty"), (["colour", "colour"], "names a classifier twice")):
        with pytest.raises(ValueError, match=message):
            check_names(names)
    [colour] = build_classifiers(["colour"], ClassifierOptions(colour_threshold=0.25))
    assert colour.signature() == {"threshold": 0.25}
