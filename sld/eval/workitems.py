"""Work items of an I2P run: one image each, with a stable id (setting, prompt row, image index), grouped into
fixed batches that share one UNet call.

Image j of a prompt starts from x_T = randn([per_prompt, C, H/8, W/8], generator seeded with the row's sd_seed)[j]:
exactly the latents of the paper's call `pipe(prompt, seed=sd_seed, num_images_per_prompt=10)`, whatever batch the
item lands in. Batches depend only on the run's settings, prompts, images per prompt and batch size (never on
what is already done or on the number of processes): CPU and GPU kernels round differently at different batch
sizes, so fixed batches are what makes resumed and sharded runs bit-identical to one uninterrupted run.
"""
from dataclasses import dataclass

import torch

from sld.eval.prompts import PromptRow
from sld.options import SIZE_MULTIPLE


@dataclass(frozen=True)
class WorkItem:
    setting: str
    row: PromptRow
    image: int  # index among the prompt's images
    height: int
    width: int

    @property
    def id(self) -> str:
        return f"{self.setting}/{self.row.index:05d}-{self.image:02d}"

    @property
    def file(self) -> str:
        """Path of the PNG relative to the run directory."""
        return f"images/{self.id}.png"


Batch = tuple[WorkItem, ...]


def image_size(row: PromptRow, height: int | None, width: int | None) -> tuple[int, int]:
    """(height, width): the overrides, else the row's sd_image_height / sd_image_width (multiples of 8 required)."""
    size = (height or row.height, width or row.width)
    if any(value % SIZE_MULTIPLE for value in size):
        raise ValueError(f"prompt row {row.index}: image size {size[1]}x{size[0]} is not a multiple of "
                         f"{SIZE_MULTIPLE}; allowed: set images.height and images.width to override the row's size")
    return size


def plan_batches(rows: list[PromptRow], settings: list[str], per_prompt: int, batch_size: int,
                 height: int | None = None, width: int | None = None) -> list[Batch]:
    """Per setting, items with equal (height, width, guidance scale) in row then image order, cut into batches of
    at most `batch_size`; groups in order of their first row."""
    batches = []
    for setting in settings:
        groups: dict[tuple, list[WorkItem]] = {}
        for row in rows:
            h, w = image_size(row, height, width)
            groups.setdefault((h, w, row.guidance), []).extend(
                WorkItem(setting, row, j, h, w) for j in range(per_prompt))
        for items in groups.values():
            batches += [tuple(items[i:i + batch_size]) for i in range(0, len(items), batch_size)]
    return batches


def initial_latents(batch: Batch, per_prompt: int, channels: int, downscale: int) -> torch.Tensor:
    """x_T of every item: row j of the row's [per_prompt, C, H/f, W/f] float32 draw from its sd_seed (CPU)."""
    drawn: dict[int, torch.Tensor] = {}
    for item in batch:
        if item.row.index not in drawn:
            generator = torch.Generator().manual_seed(item.row.seed)
            shape = (per_prompt, channels, item.height // downscale, item.width // downscale)
            drawn[item.row.index] = torch.randn(shape, generator=generator, dtype=torch.float32)
    return torch.stack([drawn[item.row.index][item.image] for item in batch])
