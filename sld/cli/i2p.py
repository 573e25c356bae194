"""`sld i2p generate | score | report`: the I2P benchmark (the library half: sld/eval/).

    sld i2p generate --config configs/i2p.yaml --model sd-v1-4.ckpt --prompts i2p.csv --out runs/sd14
    sld i2p generate --config configs/i2p.yaml --model sd-v1-4.ckpt --prompts i2p.csv --out runs/sd14 \\
        --device cuda --devices 8 --num-nodes 2 --strategy ddp
    sld i2p score runs/sd14 --classifiers nudenet,q16 --q16-clip clip-vit-large-patch14 --q16-prompts prompts.p
    sld i2p report runs/sd14

Mounted in the main command by `add_i2p_parser(subparsers)` and `run_i2p(args)`; bad input raises ValueError,
which the command prints as one line on stderr with exit status 2.
"""
import argparse

from sld.cli.config import load_i2p_config
from sld.cli.evaluation import add_generate_arguments, flag_values, mount
from sld.cli.flags import I2P_FLAGS, comma_list
from sld.eval.classifiers import CLASSIFIERS, ClassifierOptions
from sld.eval.config import I2PConfig

DESCRIPTIONS = {
    "generate": "Generate every image of the I2P prompts under each setting; resumable, shardable with Lightning.",
    "score": "Score every finished image with the chosen classifiers; cached and resumable.",
    "report": "Probability of inappropriate content and expected maximum inappropriateness per category and setting.",
}


def _add_generate(parser: argparse.ArgumentParser) -> None:
    add_generate_arguments(parser, I2P_FLAGS, I2PConfig(), "configs/i2p.yaml",
                           " (together, before or after the flags)")


def _add_score(parser: argparse.ArgumentParser) -> None:
    defaults = ClassifierOptions()
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the --out folder of 'sld i2p generate'")
    parser.add_argument("--classifiers", type=comma_list, required=True, metavar="LIST",
                        help=f"comma-separated: {', '.join(CLASSIFIERS)} (the paper: nudenet,q16)")
    parser.add_argument("--q16-clip", metavar="PATH", help="CLIP ViT-L/14 weights (file or transformers folder)")
    parser.add_argument("--q16-prompts", metavar="FILE", help="Q16 prompt embeddings (prompts.p)")
    parser.add_argument("--nudenet-threshold", type=float, default=defaults.nudenet_threshold, metavar="P",
                        help="least detection score of an exposed class that flags "
                             f"[default: {defaults.nudenet_threshold}]")
    parser.add_argument("--colour-threshold", type=float, default=defaults.colour_threshold, metavar="V",
                        help="least mean red value that flags (test classifier) "
                             f"[default: {defaults.colour_threshold}]")
    parser.add_argument("--device", default=defaults.device, metavar="NAME", help="torch device for q16 [default: cpu]")
    parser.add_argument("--batch-size", type=int, default=16, metavar="N", help="images per classifier call")


def _add_report(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the --out folder of 'sld i2p generate'")
    parser.add_argument("--classifiers", type=comma_list, metavar="LIST",
                        help="whose flags count (default: every classifier the run was scored with)")
    parser.add_argument("--sample-size", type=int, default=25, metavar="N",
                        help="prompts per bootstrap draw of the expected maximum [default: 25]")
    parser.add_argument("--rounds", type=int, default=10_000, metavar="N", help="bootstrap rounds [default: 10000]")
    parser.add_argument("--seed", type=int, default=0, metavar="N", help="bootstrap seed [default: 0]")
    parser.add_argument("--out", metavar="DIR", help="folder for report.md/.csv/.png [default: RUN_DIR/report]")


def add_i2p_parser(subparsers) -> argparse.ArgumentParser:
    """Mount `i2p` with its generate, score and report subcommands on the main command's subparsers."""
    text = "The I2P benchmark: generate, score and report (Schramowski et al., CVPR 2023, Sec. 4)."
    adders = {"generate": _add_generate, "score": _add_score, "report": _add_report}
    return mount(subparsers, "i2p", text, adders, DESCRIPTIONS)


def run_i2p(args: argparse.Namespace) -> int:
    values = vars(args)
    command = values["i2p_command"]
    if command == "generate":
        from sld.eval.generate import run_generate

        return run_generate(load_i2p_config(values["config"], values["overrides"], flag_values(values, I2P_FLAGS)))
    if command == "score":
        from sld.eval.score import run_score

        options = ClassifierOptions(device=args.device, nudenet_threshold=args.nudenet_threshold,
                                    q16_clip=args.q16_clip, q16_prompts=args.q16_prompts,
                                    colour_threshold=args.colour_threshold)
        return run_score(args.run_dir, args.classifiers, options, args.batch_size)
    from sld.eval.report import Bootstrap, run_report

    return run_report(args.run_dir, args.classifiers, Bootstrap(args.sample_size, args.rounds, args.seed), args.out)
