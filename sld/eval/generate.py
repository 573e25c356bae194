"""`sld i2p generate` (and, through `plan_run`, `sld coco generate`): every image of every (setting, prompt) as one
work item, written atomically with its record; a manifest lists finished items, so a rerun skips them and a kill
loses at most the batch in flight.

Order of work: check everything (every process, before any launch or write) -> launch the processes -> rank 0
writes run.json and prompts.jsonl, removes a killed run's temporary files and merges its manifest parts -> all
ranks read the same manifest and take disjoint shares of the pending batches -> rank 0 merges the parts.
A batch with any item missing is recomputed whole (so its images match the uninterrupted run bit for bit); only
its missing items are written.
"""
import dataclasses
import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import torch
from tqdm import tqdm

from sld import __version__
from sld.api import check_model_section, load_pipeline
from sld.eval.config import I2PConfig, sampler_section
from sld.eval.manifest import (MANIFEST, PROMPTS_FILE, RUN_FILE, append_lines, jsonl_text, merge_manifests,
                               open_for_append, part_path, read_jsonl, remove_temporaries)
from sld.eval.prompts import FULL_DATASET_ROWS, PromptRow, prompts_path, read_prompts, select_prompts
from sld.eval.shard import Shard, check_scale, launch
from sld.eval.workitems import Batch, WorkItem, initial_latents, plan_batches
from sld.hooks.resolve import setting_safety
from sld.io.files import prepare_output_dir, write_atomic
from sld.io.model_id import ModelId, model_id_of
from sld.io.records import canonical, generation_record, is_done, save_png
from sld.pipeline import Pipeline
from sld.settings import for_family, sampling_plan, spacing_of


@dataclass(frozen=True)
class RunPlan:
    config: I2PConfig  # or sld.eval.config.CocoConfig: the same model, sampler, images, settings and scale sections
    out: Path
    rows: list[PromptRow]
    batches: list[Batch]
    model: ModelId
    identity: dict  # what every image shares; a rerun into the same folder must match it (run.json adds the version)
    benchmark: str = "i2p"  # names the command in messages and the record's key ("i2p", "coco")
    row_lines: dict[int, dict] | None = None  # prompts.jsonl line and record fields per row; None: the I2P row's own


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def file_identity(path: Path) -> dict:
    """A prompt file as run.json names it: its name and the sha256 of its bytes."""
    return {"file": path.name, "sha256": _file_digest(path)}


def run_identity(config: I2PConfig, prompts: dict, model: ModelId) -> dict:
    """`prompts`: the prompt file's identity and the selection made from it."""
    return canonical({
        "model": {"name": model.name, "hash": model.hash, "dtype": config.model.dtype, "ema": config.model.ema,
                  "prediction": config.model.prediction, **model.adapter_fields()},
        "sampler": dataclasses.asdict(config.sampler),
        "images": dataclasses.asdict(config.images),
        "concept": config.concept,
        "prompts": prompts,
    })


def uses_full_dataset(identity: dict) -> bool:
    """Whether the run covers the published I2P table as the paper did: every row, 10 images each."""
    prompts = identity["prompts"]
    return (prompts["rows_in_file"] == FULL_DATASET_ROWS and prompts["selected"] == FULL_DATASET_ROWS
            and identity["images"]["per_prompt"] == 10)


def check_identity(out: Path, identity: dict) -> None:
    path = out / RUN_FILE
    if not path.is_file():
        return
    try:
        existing = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"{path} cannot be read ({error}); allowed: the run.json an earlier run wrote") from None
    changed = [f"{key}: {existing.get(key)} -> {value}" for key, value in identity.items()
               if existing.get(key) != value]
    if changed:
        raise ValueError(f"--out {str(out)!r} holds a run made with other settings ({'; '.join(changed)}); "
                         "allowed: the same settings (settings may differ), or a new --out folder")


def prepare(config: I2PConfig) -> RunPlan:
    """Everything checked, nothing written but the output folder: runs in every process before the launch."""
    check_scale(config.scale, config.model.device)
    check_model_section(config.model)
    prompts_file = prompts_path(config.prompts.file)
    every_row = read_prompts(prompts_file)
    selection = config.prompts
    rows = select_prompts(every_row, selection.categories, selection.hard, selection.sample, selection.sample_seed)
    chosen = dataclasses.asdict(selection)
    chosen.pop("file")
    prompts = {**file_identity(prompts_file), "rows_in_file": len(every_row), "selected": len(rows), **chosen}
    return plan_run(config, rows, prompts)


def plan_run(config: I2PConfig, rows: list[PromptRow], prompts: dict, benchmark: str = "i2p",
             row_lines: dict[int, dict] | None = None) -> RunPlan:
    """The batches of the selected rows, the output folder proven writable, the identity checked against a rerun's."""
    images = config.images
    batches = plan_batches(rows, config.settings, images.per_prompt, images.batch_size, images.height, images.width)
    out = prepare_output_dir(config.out)
    model = model_id_of(config.model)
    identity = run_identity(config, prompts, model)
    check_identity(out, identity)
    return RunPlan(config, out, rows, batches, model, identity, benchmark, row_lines)


def warn_other_thread_count(out: Path, rank: int, benchmark: str = "i2p") -> None:
    """CPU kernels reduce in an order that depends on the thread count, so images are byte-identical to the run that
    wrote run.json only when this process computes with as many threads (OMP_NUM_THREADS sets it)."""
    recorded = json.loads((out / RUN_FILE).read_text(encoding="utf-8")).get("threads")
    threads = torch.get_num_threads()
    if recorded is not None and recorded != threads:
        print(f"sld {benchmark}: warning: process {rank} computes with {threads} threads but {out / RUN_FILE} records "
              f"{recorded}; its images may differ from that run's by round-off (a few pixel values by 1). Set "
              f"OMP_NUM_THREADS={recorded} for byte-identical images.", file=sys.stderr)


def start_run(plan: RunPlan) -> None:
    """Rank 0, before the others read anything: the run's files, a killed run's leftovers, one manifest."""
    (plan.out / "images").mkdir(exist_ok=True)
    if not (plan.out / RUN_FILE).is_file():
        run_file = {**plan.identity, "version": __version__, "threads": torch.get_num_threads()}
        write_atomic(plan.out / RUN_FILE, json.dumps(run_file, indent=1, sort_keys=True) + "\n")
    lines = [row.to_json() if plan.row_lines is None else plan.row_lines[row.index] for row in plan.rows]
    write_atomic(plan.out / PROMPTS_FILE, jsonl_text(lines))
    remove_temporaries(plan.out)
    merge_manifests(plan.out)


class Recorder:
    """Image records of one loaded model: the main command's record plus the I2P item and its batch."""

    def __init__(self, plan: RunPlan, pipe: Pipeline, device_type: str):
        self.plan = plan
        self.pipe = pipe
        self.model_section = dataclasses.replace(plan.config.model, device=device_type)
        # the spacing and timesteps the pipeline will use: unset sampler and spacing are the model family's
        self.sampler = for_family(sampler_section(plan.config.sampler), pipe.model.cfg.family)
        sampling = sampling_plan(self.sampler)
        self.spacing = spacing_of(self.sampler, sampling)
        self.timesteps = list(sampling.schedule.timesteps)

    def record(self, item: WorkItem, batch: Batch) -> dict:
        row, cfg = item.row, self.pipe.model.cfg
        base = generation_record(model=self.model_section, model_id=self.plan.model, family=cfg.family,
                                 prediction=cfg.prediction,
                                 sampler=dataclasses.replace(self.sampler, cfg=row.guidance, seed=row.seed),
                                 spacing=self.spacing, timesteps=self.timesteps, height=item.height, width=item.width,
                                 negative_prompt=None, hooks=[])
        return canonical({**base, "prompt": row.prompt, "prompt_index": row.index, "image_index": item.image,
                          "seed": row.seed, **setting_safety(item.setting, self.plan.config.concept).record_fields(),
                          self.plan.benchmark: {"id": item.id, "setting": item.setting, **self.row_fields(row),
                                                "images_per_prompt": self.plan.config.images.per_prompt,
                                                "batch": [member.id for member in batch]}})

    def row_fields(self, row: PromptRow) -> dict:
        """What the record adds about the row: I2P's categories, or the run's own line (a COCO image and caption id)."""
        if self.plan.row_lines is None:
            return {"categories": list(row.categories)}
        return {key: value for key, value in self.plan.row_lines[row.index].items() if key not in ("index", "caption")}


def generate_batch(config: I2PConfig, pipe: Pipeline, batch: Batch) -> list:
    """The whole batch in one pipeline call (one UNet call per evaluation), x_T from each item's row seed."""
    first = batch[0]
    latents = initial_latents(batch, config.images.per_prompt, pipe.unet.cfg.in_channels, pipe.vae.cfg.downscale)
    sampler = config.sampler
    return pipe([item.row.prompt for item in batch], height=first.height, width=first.width, steps=sampler.steps,
                guidance_scale=first.row.guidance, sampler=sampler.name, spacing=sampler.spacing, eta=sampler.eta,
                karras=sampler.karras, seed=first.row.seed, latents=latents,
                safety=setting_safety(first.setting, config.concept)).images


def manifest_entry(item: WorkItem) -> dict:
    return {"id": item.id, "setting": item.setting, "row": item.row.index, "image": item.image, "file": item.file}


def write_batch(plan: RunPlan, pipe: Pipeline, recorder: Recorder, batch: Batch, done: set[str],
                manifest: IO[str]) -> int:
    """Write the batch's missing items (computing the whole batch when any is not on disk); returns how many."""
    records = {item.id: recorder.record(item, batch) for item in batch}
    missing = [item for item in batch if item.id not in done]
    on_disk = [item for item in missing if is_done(plan.out / item.file, records[item.id])]
    if on_disk:  # written by a killed run after its last manifest line
        append_lines(manifest, [manifest_entry(item) for item in on_disk])
    todo = [item for item in missing if item not in on_disk]
    if not todo:
        return 0
    for item, image in zip(batch, generate_batch(plan.config, pipe, batch)):
        if item in todo:
            path = plan.out / item.file
            path.parent.mkdir(parents=True, exist_ok=True)
            save_png(image, path, records[item.id])
            append_lines(manifest, [manifest_entry(item)])
    return len(todo)


def generate_shard(plan: RunPlan, shard: Shard) -> int:
    """This process's share of the pending batches; returns the number of images it wrote."""
    done = {entry["id"] for entry in read_jsonl(plan.out / MANIFEST)}  # merged by rank 0: the same for every rank
    mine = shard.take([batch for batch in plan.batches if any(item.id not in done for item in batch)])
    if not mine:
        return 0
    pipe = load_pipeline(dataclasses.replace(plan.config.model, device=str(shard.device)))
    recorder = Recorder(plan, pipe, shard.device.type)
    written = 0
    with open_for_append(part_path(plan.out, shard.rank)) as manifest, \
            tqdm(total=sum(map(len, mine)), desc=f"{plan.benchmark} generate", unit="image", disable=shard.rank != 0,
                 dynamic_ncols=True) as bar:
        for batch in mine:
            written += write_batch(plan, pipe, recorder, batch, done, manifest)
            bar.update(len(batch))
    return written


def run_generate(config: I2PConfig) -> int:
    return run_plan(prepare(config))


def run_plan(plan: RunPlan) -> int:
    """Launch the processes (every one has prepared the same plan), generate every pending batch, merge."""
    config = plan.config
    shard = launch(config.scale, config.model.device)
    if shard.rank == 0:
        start_run(plan)
    shard.barrier()
    warn_other_thread_count(plan.out, shard.rank, plan.benchmark)
    written = generate_shard(plan, shard)
    shard.barrier()
    if shard.rank == 0:
        finished = merge_manifests(plan.out)
        asked = sum(map(len, plan.batches))
        print(f"sld {plan.benchmark}: this process wrote {written} images (rank 0 of {shard.world}); {finished} are "
              f"finished in {plan.out} ({asked} for settings {', '.join(config.settings)})", file=sys.stderr)
    return 0
