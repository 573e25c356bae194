"""The `sld` command (also `python -m sld`): generate, compare, sweep and info, thin over the Python API.

    sld generate --prompt "a photo of a cat" --preset strong --out outputs
    sld generate --config configs/experiments/example.yaml sld.threshold=0.02 sampler.steps=30
    sld generate --plugin mymod --sampler mine --hook myhook --prompt "a photo of a cat"
    sld compare --model v1-5-pruned-emaonly.safetensors --prompt "..." --seed 3 --settings none,medium,sega-max,negative
    sld sweep --config configs/sweeps/example.yaml sampler.steps=30
    sld info v1-5-pruned-emaonly.safetensors
    sld toy-eval --out toy-report.md
    sld i2p generate | score | report ...     (sld/cli/i2p.py)
    sld coco generate | score | report ...    (sld/cli/coco.py)

Bad input is one line on stderr naming the problem and what is allowed, exit status 2; Ctrl-C exits 130 and
keeps every finished image.
"""
import argparse
import re
import sys

from sld import __version__
from sld.cli import toy_eval
from sld.cli.coco import add_coco_parser, run_coco
from sld.cli.compare import run_compare
from sld.cli.config import RunConfig, load_run_config
from sld.cli.flags import COMMAND_FLAGS, FLAGS, add_flags
from sld.cli.generate import run_generate
from sld.cli.i2p import add_i2p_parser, run_i2p
from sld.cli.info import run_info
from sld.cli.sweep import run_sweep

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130
DESCRIPTIONS = {
    "generate": "Write one PNG per image, with its generation record embedded; finished images are skipped.",
    "compare": "The same prompt and seed under no SLD and each safety setting, as one labelled grid PNG.",
    "sweep": "A grid over sampler, safety and hook values (the config's sweep: mapping) for every prompt and seed: "
             "images with records, one contact sheet per prompt, runs.csv and telemetry.csv.",
    "info": "Family, prediction type, dtype, parameter counts and EMA of a checkpoint, without building it.",
    "toy-eval": toy_eval.DESCRIPTION,
}


class UsageError(ValueError):
    """A command line argparse rejects."""


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str):
        raise UsageError(f"{self.prog}: {message} (see '{self.prog} --help')")


def _add_run_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    add_flags(parser, tuple(flag for flag in FLAGS if flag.name in COMMAND_FLAGS[command]), RunConfig())
    parser.add_argument("--config", action="append", default=[], metavar="FILE",
                        help="YAML run configuration; repeat to merge several, later files win")
    example = "sweep.sld.threshold=[0.0,0.01] (a swept key's values) or " if command == "sweep" else ""
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help=f"omegaconf dotlist overrides applied after the config files, e.g. {example}"
                             "sld.threshold=0.02")


def build_parsers() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    top = OneLineParser(prog="sld", description="Safe Latent Diffusion: generate, compare and inspect.")
    top.add_argument("--version", action="version", version=f"sld {__version__}")
    commands = top.add_subparsers(dest="command", required=True, metavar="{generate,compare,sweep,info,toy-eval,i2p,coco}")
    parsers = {name: commands.add_parser(name, help=text, description=text) for name, text in DESCRIPTIONS.items()}
    parsers["i2p"] = add_i2p_parser(commands)
    parsers["coco"] = add_coco_parser(commands)
    for command in ("generate", "compare", "sweep"):
        _add_run_arguments(parsers[command], command)
    parsers["info"].add_argument("path", help="a .safetensors/.ckpt file, a diffusers folder, 'toy' or 'tiny'")
    toy_eval.add_arguments(parsers["toy-eval"])
    return top, parsers


def run(argv: list[str]) -> int:
    top, parsers = build_parsers()
    if not argv or argv[0] not in parsers:
        top.parse_args(argv)  # --help, --version, or a one-line error about the command
    command, parser = argv[0], parsers[argv[0]]
    if command == "i2p":  # nested subcommands: parse_intermixed_args refuses subparsers
        return run_i2p(parser.parse_args(argv[1:]))
    if command == "coco":
        return run_coco(parser.parse_args(argv[1:]))
    args = vars(parser.parse_intermixed_args(argv[1:]))
    if command == "info":
        return run_info(args["path"])
    if command == "toy-eval":
        return toy_eval.run_toy_eval(args)
    config_files, overrides = args.pop("config"), args.pop("overrides")
    if command == "sweep":
        return run_sweep(config_files, overrides, args)
    config = load_run_config(config_files, overrides, args)
    return run_generate(config) if command == "generate" else run_compare(config)


def one_line(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        return f"{error.filename}: {error.strerror}" if error.filename else error.strerror
    return re.sub(r"\s*\n\s*", " ", str(error)).strip()


def main(argv: list[str] | None = None) -> int:
    try:
        return run(sys.argv[1:] if argv is None else list(argv))
    except KeyboardInterrupt:
        print("sld: interrupted; finished images are complete, rerun the same command to continue", file=sys.stderr)
        return EXIT_INTERRUPTED
    except UsageError as error:
        print(f"{one_line(error).replace(': ', ': error: ', 1)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (ValueError, OSError) as error:  # CheckpointError is a ValueError
        print(f"sld: error: {one_line(error)}", file=sys.stderr)
        return EXIT_BAD_INPUT
