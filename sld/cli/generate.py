"""`sld generate`: one PNG per image, each carrying its generation record; images already on disk are skipped.

Image k of a run (prompt p, image j of --n per prompt, k = p * n + j) uses seed `sampler.seed + k`, one pipeline
call per image, so `--seed <recorded seed> --n 1` reproduces any single image, and rerunning an interrupted run
continues where it stopped.
"""
import sys
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from sld.cli.config import PromptSection, RunConfig, safety_setting
from sld.cli.session import generate_image, progress, start_session
from sld.hooks.resolve import Safety
from sld.io.files import prepare_output_dir
from sld.io.records import image_name, is_done, save_png

PROMPT_FILE_FORMAT = "a UTF-8 text file with one prompt per line (blank lines and lines starting with # skipped)"


@dataclass(frozen=True)
class ImageJob:
    prompt_index: int
    image_index: int
    prompt: str
    seed: int


def read_prompts(path: str) -> list[str]:
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else "not UTF-8 text"
        raise ValueError(f"--prompt-file {path!r} cannot be read ({reason}); allowed: {PROMPT_FILE_FORMAT}") from None
    prompts = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not prompts:
        raise ValueError(f"--prompt-file {path!r} holds no prompts; allowed: {PROMPT_FILE_FORMAT}")
    return prompts


def prompts_of(section: PromptSection) -> list[str]:
    if (section.text is None) == (section.file is None):
        raise ValueError("give exactly one of --prompt TEXT (prompt.text) and --prompt-file FILE (prompt.file)")
    return [section.text] if section.text is not None else read_prompts(section.file)


def plan_images(prompts: list[str], per_prompt: int, base_seed: int) -> list[ImageJob]:
    return [ImageJob(p, j, prompt, base_seed + p * per_prompt + j)
            for p, prompt in enumerate(prompts) for j in range(per_prompt)]


def image_record(shared: dict, job: ImageJob, safety: Safety) -> dict:
    """The record of one image: what the run shares, the image's prompt and seed, the exact safety setting."""
    return {**shared, "prompt": job.prompt, "prompt_index": job.prompt_index, "image_index": job.image_index,
            "seed": job.seed, **safety.record_fields()}


def run_generate(run: RunConfig) -> int:
    prompts = prompts_of(run.prompt)
    out = prepare_output_dir(run.out)
    safety = safety_setting(run.sld)
    session = start_session(run)
    records = [(job, image_record(session.record, job, safety))
               for job in plan_images(prompts, run.image.n, run.sampler.seed)]
    jobs = [(job, record, out / image_name(record)) for job, record in records]
    pending = [(job, record, path) for job, record, path in jobs if not is_done(path, record)]
    with progress(len(pending) * session.steps_per_image, "generate") as bar:
        for job, record, path in pending:
            save_png(generate_image(session, job.prompt, job.seed, safety, bar), path, record)
            tqdm.write(str(path))
    print(f"sld: {len(pending)} written, {len(jobs) - len(pending)} already done, in {out}", file=sys.stderr)
    return 0
