"""What `sld i2p` and `sld coco` share: a `generate` that takes flags, YAML files and overrides, and the mounting of
the three subcommands generate, score and report."""
import argparse
from typing import Callable

from sld.cli.flags import Flag, add_flags

SUBCOMMANDS = ("generate", "score", "report")


def add_generate_arguments(parser: argparse.ArgumentParser, flags: tuple[Flag, ...], defaults, config_file: str,
                           overrides_note: str = "") -> None:
    add_flags(parser, flags, defaults, show_empty_defaults=True)
    parser.add_argument("--config", action="append", default=[], metavar="FILE",
                        help=f"YAML configuration ({config_file} lists every key); repeat to merge, later wins")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help=f"omegaconf dotlist overrides after the config files, e.g. sampler.steps=30{overrides_note}")


def mount(subparsers, name: str, text: str, adders: dict[str, Callable], descriptions: dict[str, str]):
    """`sld NAME {generate,score,report}`; the chosen subcommand lands in `args.<name>_command`."""
    parser = subparsers.add_parser(name, help=text, description=text)
    choices = "{" + ",".join(SUBCOMMANDS) + "}"
    commands = parser.add_subparsers(dest=f"{name}_command", required=True, metavar=choices)
    for command in SUBCOMMANDS:
        adders[command](commands.add_parser(command, help=descriptions[command], description=descriptions[command]))
    return parser


def flag_values(values: dict, flags: tuple[Flag, ...]) -> dict:
    """The flags' values by config key, as the config loaders take them."""
    return {flag.key: values[flag.key] for flag in flags if flag.key in values}
