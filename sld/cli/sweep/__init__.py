"""`sld sweep --config FILE [KEY=VALUE ...]`: an ablation grid in one command (grid: sld/cli/sweep/grid.py).

Every grid point (a run) draws every image of the base configuration: prompt p, image j with seed
`sampler.seed + p * n + j`, as `sld generate` does, so a sweep image is the `sld generate` image of its settings,
record and file name included. The model is loaded once per distinct model section (runs that sweep `model.loras`
or `model.embeddings` take turns, one model in memory at a time). In the output folder:

    runs/<run id>/<image>.png      images with their records and telemetry, written atomically; an image whose
                                   record (and telemetry) is already there is skipped, so a rerun resumes
    sheets/sheet-<p>-<prompt>.png  one contact sheet per prompt: a row per run, labelled with its values, and a
                                   column per seed; written when that prompt's images are done (by the last model)
    runs.csv, telemetry.csv        tables for a notebook (sld/cli/sweep/tables.py)
"""
import dataclasses
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from sld import __version__
from sld.api import load_pipeline
from sld.cli.config import safety_setting
from sld.cli.generate import ImageJob, image_record, plan_images, prompts_of
from sld.cli.session import Session, generate_output, progress, start_session
from sld.cli.sweep.grid import Point, grid_points, read_sweep
from sld.cli.sweep.tables import write_tables
from sld.io.files import prepare_output_dir
from sld.io.image_grid import labelled_grid
from sld.io.records import image_name, is_done, read_telemetry, save_png, sheet_name

RUNS_FOLDER = "runs"
SHEETS_FOLDER = "sheets"


@dataclass(frozen=True)
class SweepImage:
    point: Point
    session: Session | None  # None once its model's images are written, so that the model can be freed
    job: ImageJob
    record: dict
    path: Path

    def done(self) -> bool:
        return is_done(self.path, self.record) and read_telemetry(self.path) is not None

    def row(self, out: Path) -> dict:
        """This image's runs.csv row."""
        return {"run_id": self.point.run_id, **self.point.values, "prompt_index": self.job.prompt_index,
                "image_index": self.job.image_index, "prompt": self.job.prompt, "seed": self.job.seed,
                "file": self.path.relative_to(out).as_posix()}


def plan_sweep(points: list[Point], sessions: list[Session], jobs: list[ImageJob], out: Path) -> list[SweepImage]:
    """Every image of every run, ordered by prompt, then run, then seed."""
    images = []
    for point, session in zip(points, sessions):
        safety = safety_setting(point.run.sld)
        for job in jobs:
            record = image_record(session.record, job, safety)
            path = out / RUNS_FOLDER / f"{point.run_id:03d}" / image_name(record)
            images.append(SweepImage(point, session, job, record, path))
    return sorted(images, key=lambda image: (image.job.prompt_index, image.point.run_id, image.job.image_index))


def write_image(image: SweepImage, bar: tqdm) -> None:
    safety = safety_setting(image.point.run.sld)
    output = generate_output(image.session, image.job.prompt, image.job.seed, safety, bar)
    image.path.parent.mkdir(parents=True, exist_ok=True)
    save_png(output.images[0], image.path, image.record, output.telemetry)
    tqdm.write(str(image.path))


def write_sheet(out: Path, images: list[SweepImage], points: list[Point]) -> bool:
    """The contact sheet of one prompt's images (rows: runs, columns: seeds); False when it was already there."""
    first = images[0].job
    seeds = list(dict.fromkeys(image.job.seed for image in images))
    rows = [{"run_id": point.run_id, "label": point.label, "values": point.values,
             "files": [image.path.name for image in images if image.point is point]} for point in points]
    record = {"version": __version__, "prompt": first.prompt, "prompt_index": first.prompt_index, "seeds": seeds,
              "rows": rows}
    path = out / SHEETS_FOLDER / sheet_name(record)
    if is_done(path, record):
        return False
    path.parent.mkdir(exist_ok=True)
    pictures = [Image.open(image.path).convert("RGB") for image in images]
    sheet = labelled_grid(pictures, [f"seed {seed}" for seed in seeds], len(seeds), [p.label for p in points])
    save_png(sheet, path, record)
    tqdm.write(str(path))
    return True


def model_groups(points: list[Point]) -> list[list[Point]]:
    """The points by model section (path, dtype, adapters, ...), in order of first appearance."""
    groups: dict[str, list[Point]] = {}
    for point in points:
        groups.setdefault(json.dumps(dataclasses.asdict(point.run.model), sort_keys=True), []).append(point)
    return list(groups.values())


def run_sweep(config_files: list[str], overrides: list[str], flags: dict[str, object]) -> int:
    base, grid = read_sweep(config_files, overrides, flags)
    points = grid_points(base, grid)
    first = points[0].run  # prompts, images and output folder are the base's: not sweepable
    prompts = prompts_of(first.prompt)
    out = prepare_output_dir(first.out)
    jobs = plan_images(prompts, first.image.n, first.sampler.seed)
    groups = model_groups(points)
    images, written, sheets = [], 0, 0
    for number, group in enumerate(groups):
        pipe = load_pipeline(group[0].run.model)
        group_images = plan_sweep(group, [start_session(point.run, pipe) for point in group], jobs, out)
        images += [dataclasses.replace(image, session=None) for image in group_images]
        pending = [image for image in group_images if not image.done()]
        written += len(pending)
        with progress(sum(image.session.steps_per_image for image in pending), "sweep") as bar:
            for prompt_index in range(len(prompts)):
                for image in pending:
                    if image.job.prompt_index == prompt_index:
                        write_image(image, bar)
                if number == len(groups) - 1:
                    prompt_images = sorted((image for image in images if image.job.prompt_index == prompt_index),
                                           key=lambda image: (image.point.run_id, image.job.image_index))
                    sheets += write_sheet(out, prompt_images, points)
        del pipe, group_images, pending
    images.sort(key=lambda image: (image.job.prompt_index, image.point.run_id, image.job.image_index))
    telemetry = [read_telemetry(image.path) for image in images]
    write_tables(out, list(grid), [image.row(out) for image in images], telemetry)
    print(f"sld: {written} written, {len(images) - written} already done, {len(points)} runs, {sheets} "
          f"contact sheets written, tables runs.csv and telemetry.csv, in {out}", file=sys.stderr)
    return 0
