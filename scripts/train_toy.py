"""Train the toy model (sld.toy.train): `python scripts/train_toy.py --out runs/toy` (about 1 h 30 min on 2 CPU cores).

Each stage saves its result under --out, so a rerun resumes. Copy toy.safetensors to models/data/ and
toy_classifier.safetensors to sld/data/ to ship them; the printed scaling factor goes into models/toy.py.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sld.cli.toy_eval import add_config_flags  # noqa: E402
from sld.toy.train import TrainConfig, run  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for stage results and the exported files")
    add_config_flags(parser, TrainConfig, skip=("out",))
    args = vars(parser.parse_args())
    run(TrainConfig(**args))


if __name__ == "__main__":
    main()
