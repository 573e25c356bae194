"""Per-image features of a run's images, cached: one .npz per extracted batch (its item ids and float32 features)
in RUN_DIR/scores/<extractor>/, each written atomically. A rerun extracts only the images without features; a
killed run loses at most the batch in flight. The folder's signature.json records what the features depend on
(the extractor's weights and resizing); extracting with another signature is refused, not mixed in.
"""
import hashlib
import json
from pathlib import Path

import numpy as np

from sld.eval.fid import write_npz
from sld.io.files import write_atomic

SIGNATURE = "signature.json"


class FeatureStore:
    def __init__(self, folder: Path, signature: dict):
        self.folder = folder
        self.signature = json.loads(json.dumps(signature, sort_keys=True))
        recorded = self.folder / SIGNATURE
        if recorded.is_file():
            found = json.loads(recorded.read_text(encoding="utf-8"))
            if found != self.signature:
                raise ValueError(f"{recorded} records {found} but this run asks for {self.signature}; allowed: the "
                                 f"same settings, or delete {self.folder} to extract again")
        else:
            self.folder.mkdir(parents=True, exist_ok=True)
            write_atomic(recorded, json.dumps(self.signature, indent=1, sort_keys=True) + "\n")

    def read(self) -> dict[str, np.ndarray]:
        """Features by item id, from every complete batch file."""
        found = {}
        for path in sorted(self.folder.glob("batch-*.npz")):
            with np.load(path, allow_pickle=False) as batch:
                found.update(zip(batch["ids"].tolist(), batch["features"]))
        return found

    def write(self, ids: list[str], features: np.ndarray) -> None:
        name = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:20]
        write_npz(self.folder / f"batch-{name}.npz", ids=np.array(ids), features=features.astype(np.float32))
