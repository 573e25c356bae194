"""`sld coco generate | score | report`: image fidelity and text alignment per setting on COCO captions (the
library half: sld/eval/coco_*.py), beside `sld i2p`.

    sld coco generate --config configs/coco.yaml --model sd-v1-4.ckpt --captions captions_val2014.json --out runs/coco
    sld coco score runs/coco --clip clip-vit-large-patch14 --fid-weights pt_inception-2015-12-05-6726825d.pth \\
        --reference val2014 --reference-crop 512
    sld coco report runs/coco --i2p runs/sd14
    sld coco generate --model toy --sample 200 --steps 20 --out runs/toy-coco   # offline: shipped toy captions

Mounted in the main command by `add_coco_parser(subparsers)` and `run_coco(args)`; bad input raises ValueError,
which the command prints as one line on stderr with exit status 2.
"""
import argparse

from sld.cli.config import load_coco_config
from sld.cli.evaluation import add_generate_arguments, flag_values, mount
from sld.cli.flags import COCO_FLAGS
from sld.eval.coco_report import Spread
from sld.eval.coco_score import ScoreOptions
from sld.eval.config import CocoConfig

DESCRIPTIONS = {
    "generate": "Generate one image per sampled COCO caption under each setting; resumable, shardable with Lightning.",
    "score": "Features for FID and the alignment score of every finished image; cached and resumable.",
    "report": "FID and CLIP score (toy: toy FID and faithfulness) per setting, beside an I2P run's inappropriateness.",
}


def _add_generate(parser: argparse.ArgumentParser) -> None:
    add_generate_arguments(parser, COCO_FLAGS, CocoConfig(), "configs/coco.yaml")


def _add_score(parser: argparse.ArgumentParser) -> None:
    defaults = ScoreOptions()
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the --out folder of 'sld coco generate'")
    parser.add_argument("--clip", metavar="PATH", help="CLIP weights for the CLIP score: a transformers folder "
                                                       "(e.g. openai/clip-vit-large-patch14) or an OpenAI file")
    parser.add_argument("--fid-weights", metavar="FILE", help="FID Inception weights "
                                                              "(pt_inception-2015-12-05-6726825d.pth)")
    parser.add_argument("--reference", metavar="DIR", help="COCO's real images (val2014 or val2017)")
    parser.add_argument("--reference-crop", type=int, metavar="PX",
                        help="centre-crop and resize every reference image to PX x PX first (COCO's images differ "
                             "in size: give the generated size, e.g. 512)")
    parser.add_argument("--fid-resize", default=defaults.fid_resize, metavar="NAME",
                        help=f"resize to the Inception's 299 px: tf1 (the original FID code) or clean (clean-fid) "
                             f"[default: {defaults.fid_resize}]")
    parser.add_argument("--stats-cache", metavar="DIR", help="folder for the reference statistics .npz "
                                                             "[default: RUN_DIR/scores]")
    parser.add_argument("--toy-reference", type=int, default=defaults.toy_reference, metavar="N",
                        help=f"toy model: real scenes for the reference statistics [default: {defaults.toy_reference}]")
    parser.add_argument("--device", default=defaults.device, metavar="NAME", help="torch device [default: cpu]")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size, metavar="N",
                        help=f"images per network call [default: {defaults.batch_size}]")


def _add_report(parser: argparse.ArgumentParser) -> None:
    defaults = Spread()
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the --out folder of 'sld coco generate'")
    parser.add_argument("--i2p", metavar="RUN_DIR", help="a scored 'sld i2p' run of the same model: its "
                                                         "inappropriate probability joins the table")
    parser.add_argument("--splits", type=int, default=defaults.splits, metavar="N",
                        help=f"disjoint splits for FID's spread [default: {defaults.splits}]")
    parser.add_argument("--rounds", type=int, default=defaults.rounds, metavar="N",
                        help=f"bootstrap rounds of the alignment interval [default: {defaults.rounds}]")
    parser.add_argument("--seed", type=int, default=defaults.seed, metavar="N", help="bootstrap seed [default: 0]")
    parser.add_argument("--out", metavar="DIR", help="folder for report.md/.csv/.png [default: RUN_DIR/report]")


def add_coco_parser(subparsers) -> argparse.ArgumentParser:
    """Mount `coco` with its generate, score and report subcommands on the main command's subparsers."""
    text = "Image fidelity and text alignment on COCO captions: generate, score and report (the paper's Sec. 5)."
    adders = {"generate": _add_generate, "score": _add_score, "report": _add_report}
    return mount(subparsers, "coco", text, adders, DESCRIPTIONS)


def run_coco(args: argparse.Namespace) -> int:
    values = vars(args)
    command = values["coco_command"]
    if command == "generate":
        from sld.eval.coco_generate import run_coco_generate

        flags = flag_values(values, COCO_FLAGS)
        return run_coco_generate(load_coco_config(values["config"], values["overrides"], flags))
    if command == "score":
        from sld.eval.coco_score import run_coco_score

        return run_coco_score(args.run_dir, ScoreOptions(args.clip, args.fid_weights, args.reference,
                                                         args.reference_crop, args.fid_resize, args.stats_cache,
                                                         args.toy_reference, args.device, args.batch_size))
    from sld.eval.coco_report import run_coco_report

    return run_coco_report(args.run_dir, args.i2p, Spread(args.splits, args.rounds, args.seed), args.out)
