"""Text-to-image with pluggable guidance hooks: `sld.load(path)(prompt, safety="medium")`.

Flow (shared/DESIGN.md): prompts -> tokenizer -> one text-encoder call for every distinct text (negative or empty
prompt, prompt, each hook concept) -> x_T -> sampler over the guided denoiser (one batched UNet call per evaluation,
CFG, hooks) -> VAE decode of x_0 / scaling_factor -> images in [0, 1].
"""
import functools
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from models.adapters import EmbeddingSpec, LoraSpec
from models.detect import FAMILIES
from models.detect import native_size as family_native_size
from models.loader import StableDiffusion
from models.sdxl import vector_conditioning
from models.tokenizer import CLIPTokenizer
from sampling.guidance import GuidanceHook, GuidedDenoiser
from sampling.samplers import plan_sampling
from sampling.schedule import alphas_cumprod, scaled_linear_betas
from sld.hooks.resolve import Safety, guidance_hooks, resolve_safety
from sld.options import GenerationOptions, check_options, micro_conditioning

OUTPUT_TYPES = ("pil", "np", "latent")


@dataclass
class Output:
    images: list[Image.Image] | np.ndarray | torch.Tensor  # per output_type; the latents for "latent"
    latents: torch.Tensor  # final x_0 latents (before division by the scaling factor)
    telemetry: list[dict]  # one record per model evaluation: {"index", "t", <hook name>: {...}}
    seed: int  # seed of the CPU generator behind x_T (unless latents were given) and DDIM's eta noise


class Pipeline:
    def __init__(self, model: StableDiffusion, source: str = "<in memory>", loras: Sequence[LoraSpec] = (),
                 embeddings: Sequence[EmbeddingSpec] = (), native_size: int | None = None):
        """`loras`, `embeddings`: the adapter files already applied to `model` (for records; models/adapters.py).
        `native_size`: the side the model was trained at, the default height and width (None: its family's)."""
        self.model = model
        self.source = source
        self.native_size = native_size or family_native_size(model.cfg)
        self.loras, self.embeddings = tuple(loras), tuple(embeddings)
        self.family = FAMILIES[model.cfg.family]
        # textual-inversion words take the same ids in every tower's vocabulary (models/adapters.py)
        self.tokenizers = [CLIPTokenizer(max_length=text.max_length, pad_token_id=text.pad_token_id,
                                         added_tokens=model.added_tokens)
                           for text in (model.cfg.text, model.cfg.text2) if text is not None]
        self.tokenizer = self.tokenizers[0]
        self.alphas_cumprod = alphas_cumprod(scaled_linear_betas())

    @property
    def unet(self):
        return self.model.unet

    @property
    def vae(self):
        return self.model.vae

    @property
    def text_encoder(self):
        return self.model.text_encoder

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    @torch.inference_mode()
    def __call__(self, prompt: str | list[str], negative_prompt: str | list[str] | None = None,
                 height: int | None = None, width: int | None = None, steps: int = 50, guidance_scale: float = 7.5,
                 sampler: str | None = None, spacing: str | None = None, eta: float = 0.0, seed: int | None = None,
                 latents: torch.Tensor | None = None, num_images_per_prompt: int = 1,
                 safety: "str | GuidanceHook | Safety | None" = "medium", concept: str | None = None,
                 hooks: Sequence[GuidanceHook | str] = (), output_type: str = "pil",
                 callback: Callable[[int, int, torch.Tensor], None] | None = None, karras: bool = False,
                 original_size: tuple[int, int] | None = None, crops_coords_top_left: tuple[int, int] | None = None,
                 target_size: tuple[int, int] | None = None) -> Output:
        """height / width / sampler / spacing None: the family's (SDXL: 1024 px, euler, leading; SD 1/2: native size,
        pndm, the sampler's spacing). original_size, crops_coords_top_left, target_size: SDXL's micro-conditioning
        (defaults (height, width), (0, 0), (height, width); every branch gets the same)."""
        height = self.native_size if height is None else height
        width = self.native_size if width is None else width
        opts = GenerationOptions(prompt, negative_prompt, height, width, guidance_scale, seed, latents,
                                 num_images_per_prompt, output_type)
        prompts, negatives = check_options(opts, self.vae.cfg.downscale, self.unet.cfg.in_channels, OUTPUT_TYPES)
        time_ids = micro_conditioning(dict(original_size=original_size, crops_coords_top_left=crops_coords_top_left,
                                           target_size=target_size), height, width, self.model.cfg.family,
                                      supported=self.unet.cfg.adm_in_channels > 0)
        chosen = resolve_safety(safety, concept)
        if chosen.negative_prompt is not None:
            if negative_prompt is not None:
                raise ValueError("safety='negative' uses the concept as the negative prompt; leave negative_prompt=None")
            negatives = [chosen.negative_prompt] * len(prompts)
        chain = guidance_hooks([*chosen.hooks(), *hooks])
        sampler, spacing = self.family.sampler_and_spacing(sampler, spacing)
        plan = plan_sampling(sampler, steps, spacing, self.alphas_cumprod, eta=eta, karras=karras)

        concepts = list(dict.fromkeys(text for hook in chain for text in hook.concepts()))
        # diffusers' force_zeros_for_empty_prompt: no negative prompt at all -> zero unconditional embeddings
        zero_negatives = self.family.zeros_for_empty_prompt and negative_prompt is None and chosen.negative_prompt is None
        context, pooled = self.encode_branches(prompts, negatives, concepts, num_images_per_prompt, zero_negatives)
        seed = secrets.randbits(63) if seed is None else seed
        generator = torch.Generator().manual_seed(seed)  # x_T, then DDIM's eta noise, as diffusers draws them
        x = self.initial_latents(latents, len(prompts) * num_images_per_prompt, height, width, generator)

        denoiser = GuidedDenoiser(self.network(pooled, time_ids), context, concepts, guidance_scale, chain,
                                  self.alphas_cumprod, self.model.cfg.prediction)
        x = plan.run(denoiser, x, generator, callback)
        return Output(self.postprocess(x, output_type), x, denoiser.telemetry, seed)

    def network(self, pooled: torch.Tensor | None, time_ids: tuple[int, ...] | None):
        """The UNet as the denoiser calls it: for SDXL with every context row's vector conditioning bound (its branch's
        pooled embedding and the shared micro-conditioning), so each evaluation stays one batched call."""
        if pooled is None:
            return self.unet
        ids = torch.tensor([time_ids], dtype=pooled.dtype, device=pooled.device).expand(pooled.shape[0], -1)
        return functools.partial(self.unet, y=vector_conditioning(pooled, ids, self.unet.cfg.adm_in_channels))

    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One text-encoder call: (context [N, 77, width], pooled [N, P] for SDXL, else None)."""
        ids = [tokenizer(texts).to(self.device) for tokenizer in self.tokenizers]
        if len(ids) == 1:
            return self.text_encoder(ids[0]), None
        return self.text_encoder(*ids)

    def encode_branches(self, prompts: list[str], negatives: list[str], concepts: list[str], per_prompt: int,
                        zero_negatives: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Context rows [negatives, prompts, concept 0, ...], each block with one row per image (pooled rows alike for
        SDXL); one encoder call. `zero_negatives`: the negative block is zeros instead of encoded."""
        texts = list(dict.fromkeys(([] if zero_negatives else negatives) + prompts + concepts))
        encoded = self.encode(texts)
        row = {text: i for i, text in enumerate(texts)}
        images = len(prompts)

        def blocks(embedded: torch.Tensor) -> torch.Tensor:
            def block(block_texts: list[str]) -> torch.Tensor:
                return embedded[[row[text] for text in block_texts]].repeat_interleave(per_prompt, dim=0)

            positive = block(prompts)
            negative = torch.zeros_like(positive) if zero_negatives else block(negatives)
            return torch.cat([negative, positive] + [block([c] * images) for c in concepts])

        return tuple(None if embedded is None else blocks(embedded) for embedded in encoded)

    def initial_latents(self, latents: torch.Tensor | None, batch: int, height: int, width: int,
                        generator: torch.Generator) -> torch.Tensor:
        """Given latents, or float32 noise from the seeded CPU generator (the same x_T on every device and dtype)."""
        if latents is None:
            factor = self.vae.cfg.downscale
            shape = (batch, self.unet.cfg.in_channels, height // factor, width // factor)
            latents = torch.randn(shape, generator=generator, dtype=torch.float32)
        return latents.to(device=self.device, dtype=self.dtype)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents -> images in [0, 1], NCHW."""
        image = self.vae.decode(latents / self.vae.cfg.scaling_factor)
        return (image / 2 + 0.5).clamp(0, 1)

    def postprocess(self, latents: torch.Tensor, output_type: str):
        if output_type == "latent":
            return latents
        array = self.decode(latents).permute(0, 2, 3, 1).float().cpu().numpy()
        if output_type == "np":
            return array
        return [Image.fromarray(image) for image in to_uint8(array)]


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Pictures in [0, 1] (the pipeline's "np" output) -> uint8, as the PIL output holds them."""
    return (images * 255).round().astype(np.uint8)
