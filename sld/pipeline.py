"""Text-to-image with pluggable guidance hooks: `sld.load(path)(prompt, safety="medium")`.

Flow (shared/DESIGN.md): prompts -> tokenizer -> one text-encoder call for every distinct text (negative or empty
prompt, prompt, each hook concept) -> x_T -> sampler over the guided denoiser (one batched UNet call per evaluation,
CFG, hooks) -> VAE decode of x_0 / scaling_factor -> images in [0, 1].
"""
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from models.adapters import EmbeddingSpec, LoraSpec
from models.loader import StableDiffusion
from models.tokenizer import CLIPTokenizer
from sampling.guidance import GuidanceHook, GuidedDenoiser
from sampling.samplers import plan_sampling
from sampling.schedule import alphas_cumprod, scaled_linear_betas
from sld.hooks.resolve import Safety, guidance_hooks, resolve_safety
from sld.options import GenerationOptions, check_options

OUTPUT_TYPES = ("pil", "np", "latent")


@dataclass
class Output:
    images: list[Image.Image] | np.ndarray | torch.Tensor  # per output_type; the latents for "latent"
    latents: torch.Tensor  # final x_0 latents (before division by the scaling factor)
    telemetry: list[dict]  # one record per model evaluation: {"index", "t", <hook name>: {...}}
    seed: int  # seed of the CPU generator behind x_T (unless latents were given) and DDIM's eta noise


class Pipeline:
    def __init__(self, model: StableDiffusion, source: str = "<in memory>", loras: Sequence[LoraSpec] = (),
                 embeddings: Sequence[EmbeddingSpec] = ()):
        """`loras`, `embeddings`: the adapter files already applied to `model` (for records; models/adapters.py)."""
        self.model = model
        self.source = source
        self.loras, self.embeddings = tuple(loras), tuple(embeddings)
        self.tokenizer = CLIPTokenizer(max_length=model.cfg.text.max_length, pad_token_id=model.cfg.text.pad_token_id,
                                       added_tokens=model.added_tokens)
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
    def __call__(self, prompt: str | list[str], negative_prompt: str | list[str] | None = None, height: int = 512,
                 width: int = 512, steps: int = 50, guidance_scale: float = 7.5, sampler: str = "pndm",
                 spacing: str | None = None, eta: float = 0.0, seed: int | None = None,
                 latents: torch.Tensor | None = None, num_images_per_prompt: int = 1,
                 safety: "str | GuidanceHook | Safety | None" = "medium", concept: str | None = None,
                 hooks: Sequence[GuidanceHook | str] = (), output_type: str = "pil",
                 callback: Callable[[int, int, torch.Tensor], None] | None = None, karras: bool = False
                 ) -> Output:
        opts = GenerationOptions(prompt, negative_prompt, height, width, guidance_scale, seed, latents,
                                 num_images_per_prompt, output_type)
        prompts, negatives = check_options(opts, self.vae.cfg.downscale, self.unet.cfg.in_channels, OUTPUT_TYPES)
        chosen = resolve_safety(safety, concept)
        if chosen.negative_prompt is not None:
            if negative_prompt is not None:
                raise ValueError("safety='negative' uses the concept as the negative prompt; leave negative_prompt=None")
            negatives = [chosen.negative_prompt] * len(prompts)
        chain = guidance_hooks([*chosen.hooks(), *hooks])
        plan = plan_sampling(sampler, steps, spacing, self.alphas_cumprod, eta=eta, karras=karras)

        concepts = list(dict.fromkeys(text for hook in chain for text in hook.concepts()))
        context = self.encode_branches(prompts, negatives, concepts, num_images_per_prompt)
        seed = secrets.randbits(63) if seed is None else seed
        generator = torch.Generator().manual_seed(seed)  # x_T, then DDIM's eta noise, as diffusers draws them
        x = self.initial_latents(latents, len(prompts) * num_images_per_prompt, height, width, generator)

        denoiser = GuidedDenoiser(self.unet, context, concepts, guidance_scale, chain, self.alphas_cumprod,
                                  self.model.cfg.prediction)
        x = plan.run(denoiser, x, generator, callback)
        return Output(self.postprocess(x, output_type), x, denoiser.telemetry, seed)

    def encode_branches(self, prompts: list[str], negatives: list[str], concepts: list[str], per_prompt: int
                        ) -> torch.Tensor:
        """Context rows [negatives, prompts, concept 0, ...], each block with one row per image; one encoder call."""
        texts = list(dict.fromkeys(negatives + prompts + concepts))
        embedded = self.text_encoder(self.tokenizer(texts).to(self.device))
        row = {text: i for i, text in enumerate(texts)}

        def block(block_texts: list[str]) -> torch.Tensor:
            return embedded[[row[text] for text in block_texts]].repeat_interleave(per_prompt, dim=0)

        images = len(prompts)
        return torch.cat([block(negatives), block(prompts)] + [block([c] * images) for c in concepts])

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
