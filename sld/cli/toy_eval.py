"""`sld toy-eval`: faithfulness, degeneration and SLD's effect on the toy model (sld/toy/evaluate.py), as a markdown
report."""
import argparse
import dataclasses
import json
from pathlib import Path

import sld
from sld.toy.classifier import load_scene_net
from sld.toy.evaluate import EvalConfig, faithfulness, reconstruction_psnr, report, seconds_per_image, sld_effect

DESCRIPTION = ("Prompt faithfulness of the toy model; the share of pictures showing blood for implicit prompts ('an "
               "angry ...') under no SLD and each preset with the safety concept; the benign control prompts' "
               "faithfulness, blood rate and SSIM to SD's pictures under each.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="toy", help="'toy' (default) or a file of the sd1-toy family")
    add_config_flags(parser, EvalConfig)
    parser.add_argument("--out", type=Path, help="also write the report here (.md) with its numbers beside it (.json)")


def add_config_flags(parser: argparse.ArgumentParser, config: type, skip: tuple[str, ...] = ()) -> None:
    """One --flag per field of the dataclass `config` (not in `skip`), typed and defaulted by its default."""
    for field in dataclasses.fields(config):
        if field.name not in skip:
            parser.add_argument(f"--{field.name.replace('_', '-')}", type=type(field.default), default=field.default,
                                help=f"default: {field.default}")


def run_toy_eval(args: dict) -> int:
    out, model = args.pop("out"), args.pop("model")
    cfg = EvalConfig(**args)
    if out is not None and not out.parent.is_dir():
        raise ValueError(f"--out {str(out)!r}: folder {str(out.parent)!r} does not exist; allowed: a file in an existing folder")
    pipe, net = sld.load(model), load_scene_net()
    faithful, rows, seconds = faithfulness(pipe, net, cfg), sld_effect(pipe, net, cfg), seconds_per_image(pipe, cfg)
    psnr = reconstruction_psnr(pipe)
    lines = report(faithful, rows, seconds, psnr, cfg)
    print("\n".join(lines))
    if out is not None:
        out.write_text("\n".join(lines) + "\n")
        numbers = {"config": dataclasses.asdict(cfg), "faithfulness": faithful, "sld": rows, "seconds_per_image": seconds,
                   "vae_psnr_db": psnr}
        out.with_suffix(".json").write_text(json.dumps(numbers, indent=2) + "\n")
    return 0
