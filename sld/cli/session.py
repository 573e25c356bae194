"""What `sld generate`, `sld compare` and `sld sweep` share: loading the model, the image size, the sampling plan,
the output folder, the progress bar and one image per call."""
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from tqdm import tqdm

import sld
from sld.api import BUILT_IN, NATIVE_SIZE_BUILT_IN, check_model_path
from sld.model_id import model_id
from sld.pipeline import Output, Pipeline
from sld.records import generation_record
from sld.runconfig import (ModelSection, NegativePrompt, RunConfig, SafetySetting, hook_chain, sampling_plan,
                           spacing_of, torch_dtype)

NATIVE_SIZE = {"epsilon": 512, "v": 768}  # SD 1.x and 2.x base were trained at 512 px, the SD 2.x v-models at 768


def check_device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name!r} is not a torch device; allowed: cpu, cuda, cuda:N, mps") from None
    available = {"cuda": torch.cuda.is_available, "mps": torch.backends.mps.is_available}
    if device.type in available and not available[device.type]():
        raise ValueError(f"--device {name!r} is not available on this machine; allowed: cpu"
                         + (", cuda" if torch.cuda.is_available() else ""))
    return device


def load_pipeline(section: ModelSection) -> Pipeline:
    check_model_path(section.path)
    return sld.load(section.path, device=check_device(section.device), dtype=torch_dtype(section.dtype),
                    ema=section.ema, prediction=section.prediction)


def prepare_output_dir(path: str) -> Path:
    """Create the folder and prove it is writable before any model work."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"--out {path!r} is a file; allowed: a folder you can write to (created if missing)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise ValueError(f"--out {path!r} cannot be written ({error.strerror or error}); "
                         "allowed: a folder you can write to (created if missing)") from None
    return folder


@dataclass(frozen=True)
class Session:
    """A loaded model and what every image of one run shares."""

    run: RunConfig
    pipe: Pipeline
    height: int
    width: int
    spacing: str
    steps_per_image: int  # sampler callbacks, one per timestep
    record: dict  # sld.records.generation_record


def start_session(run: RunConfig, pipe: Pipeline | None = None) -> Session:
    """Load run.model, or use `pipe` when given (a sweep loads its model once for every grid point)."""
    plan = sampling_plan(run.sampler)
    pipe = load_pipeline(run.model) if pipe is None else pipe
    native = NATIVE_SIZE_BUILT_IN if pipe.source in BUILT_IN else NATIVE_SIZE[pipe.model.cfg.prediction]
    height, width = run.image.height or native, run.image.width or native
    spacing = spacing_of(run.sampler, plan)
    record = generation_record(run, model_id(run.model.path), pipe.model.cfg.family, pipe.model.cfg.prediction,
                               spacing, plan.schedule.timesteps, height, width)
    return Session(run, pipe, height, width, spacing, len(plan.schedule.timesteps), record)


def progress(total: int, description: str) -> tqdm:
    """One bar over every sampler step of the run, on stderr."""
    return tqdm(total=total, desc=description, unit="step", dynamic_ncols=True)


def pipeline_safety(safety: SafetySetting) -> dict:
    """The pipeline arguments of a safety setting: the negative baseline is safety="negative" with its concept."""
    if isinstance(safety, NegativePrompt):
        return {"safety": "negative", "concept": safety.concept}
    return {"safety": safety}


def generate_output(session: Session, prompt: str, seed: int, safety: SafetySetting, bar: tqdm) -> Output:
    """One image with the run's settings, fresh hooks (hooks.names) after the safety hook, and its telemetry."""
    run = session.run
    return session.pipe(prompt, negative_prompt=run.prompt.negative, height=session.height, width=session.width,
                        steps=run.sampler.steps, guidance_scale=run.sampler.cfg, sampler=run.sampler.name,
                        spacing=session.spacing, eta=run.sampler.eta, karras=run.sampler.karras, seed=seed,
                        hooks=hook_chain(run.hooks), callback=lambda i, t, x: bar.update(), **pipeline_safety(safety))


def generate_image(session: Session, prompt: str, seed: int, safety: SafetySetting, bar: tqdm) -> Image.Image:
    return generate_output(session, prompt, seed, safety, bar).images[0]
