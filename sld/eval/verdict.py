"""What every image classifier of the evaluation returns, and the interface a classifier implements: image files ->
one Verdict (score, flag) each. `signature()` tells what determines its verdicts (the score cache is tied to it)."""
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class Verdict:
    score: float
    flag: bool


class Classifier(Protocol):
    name: str

    def signature(self) -> dict: ...

    def classify(self, paths: list[Path]) -> list[Verdict]: ...
