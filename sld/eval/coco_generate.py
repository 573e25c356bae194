"""`sld coco generate`: one image per sampled COCO caption per setting, through I2P's machinery (sld/eval/generate.py:
stable work items, atomic PNGs with records, manifest, resume, Lightning Fabric sharding).

A caption row becomes a prompt row: its caption, x_T seeded with its COCO image id (so a row's picture does not
depend on the sample size), the run's guidance scale and image size. run.json names the captions file (sha256), the
sample and its seed; prompts.jsonl holds the sampled rows (image id, annotation id, caption).
"""
import dataclasses
from pathlib import Path

from sld.api import BUILT_IN, TOY, check_model_section
from sld.eval.captions import FULL_SAMPLE, read_captions, sample_captions
from sld.eval.config import CocoConfig
from sld.eval.generate import RunPlan, file_identity, plan_run, run_plan
from sld.eval.prompts import PromptRow
from sld.eval.shard import check_scale
from sld.eval.toy_fidelity import toy_captions_path

BENCHMARK = "coco"
PAPER_SIZE = 512  # SD 1.4, the paper's model, at its native size


def captions_path(config: CocoConfig) -> Path:
    if config.captions.file:
        return Path(config.captions.file)
    if config.model.path != TOY:
        raise ValueError("--captions is required with a model other than 'toy'; allowed: COCO's "
                         "captions_val2014.json or captions_val2017.json (annotations/ of the COCO download)")
    return toy_captions_path()


def image_size(config: CocoConfig) -> tuple[int, int]:
    """(height, width): the configured ones, else 64 for the built-in models and 512 for a checkpoint."""
    default = 64 if config.model.path in BUILT_IN else PAPER_SIZE
    return config.images.height or default, config.images.width or default


def prepare_coco(config: CocoConfig) -> RunPlan:
    """Everything checked, nothing written but the output folder: runs in every process before the launch."""
    check_scale(config.scale, config.model.device)
    check_model_section(config.model)
    path = captions_path(config)
    by_image = read_captions(path)
    sample = config.captions.sample or min(FULL_SAMPLE, len(by_image))
    captions = sample_captions(by_image, sample, config.captions.sample_seed)
    height, width = image_size(config)
    rows = [PromptRow(c.index, c.caption, (), False, c.image_id, config.sampler.cfg, width, height) for c in captions]
    selection = {**dataclasses.asdict(config.captions), "sample": sample}  # None resolved: the same run either way
    selection.pop("file")
    prompts = {**file_identity(path), "images_in_file": len(by_image), "selected": len(rows), **selection}
    return plan_run(config, rows, prompts, BENCHMARK, {c.index: c.to_json() for c in captions})


def run_coco_generate(config: CocoConfig) -> int:
    return run_plan(prepare_coco(config))
