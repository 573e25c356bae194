"""Random adapter files for the tiny SD 1 model, named after the diffusers/transformers reference modules, and the
diffusers pipeline that loads them (the reference for tests/test_lora.py and tests/test_embeddings.py)."""
import copy

import torch
from torch import nn

from reference import float64_scheduler, save_safetensors

RANK = 4


def lora_tensors(modules: list[tuple[str, nn.Module]], fmt: str, prefix: str, seed: int, rank: int = RANK,
                 alpha: float | None = None) -> dict[str, torch.Tensor]:
    """A random LoRA over `modules` (Linear: [rank, in] / [out, rank]; Conv2d: LoCon [rank, in, kh, kw] / [out, rank,
    1, 1]) whose delta is as large as the weights it changes. fmt "kohya": `prefix + name_with_underscores` with
    `.lora_down/.lora_up/.alpha`; "peft": `prefix + name` with `.lora_A/.lora_B` (alpha = rank)."""
    generator = torch.Generator().manual_seed(seed)
    sd = {}
    for name, module in modules:
        kernel = module.kernel_size if isinstance(module, nn.Conv2d) else ()
        fan_in = module.weight[0].numel()
        down = torch.randn(rank, module.weight.shape[1], *kernel, generator=generator, dtype=torch.float64)
        up = torch.randn(module.weight.shape[0], rank, *((1, 1) if kernel else ()), generator=generator,
                         dtype=torch.float64)
        down, up = down / fan_in ** 0.5, up / rank ** 0.5
        if fmt == "kohya":
            key = prefix + name.replace(".", "_")
            sd[f"{key}.lora_down.weight"], sd[f"{key}.lora_up.weight"] = down, up
            sd[f"{key}.alpha"] = torch.tensor(float(rank if alpha is None else alpha))
        else:
            sd[f"{prefix}{name}.lora_A.weight"], sd[f"{prefix}{name}.lora_B.weight"] = down, up
    return sd


def layers(model: nn.Module, pattern: str = "", kinds=(nn.Linear, nn.Conv2d)) -> list[tuple[str, nn.Module]]:
    """The model's Linear/Conv2d modules whose name contains `pattern`."""
    return [(name, module) for name, module in model.named_modules() if isinstance(module, kinds) and pattern in name]


def write_lora(path, unet_modules, text_modules, fmt: str, seed: int, alpha: float | None = None) -> str:
    prefixes = {"kohya": ("lora_unet_", "lora_te_text_model_"), "peft": ("unet.", "text_encoder.text_model.")}[fmt]
    sd = {**lora_tensors(unet_modules, fmt, prefixes[0], seed, alpha=alpha),
          **lora_tensors(text_modules, fmt, prefixes[1], seed + 1, alpha=alpha)}
    save_safetensors(sd, path)
    return str(path)


def diffusers_pipeline(parts, tokenizer, loras=(), embeddings=()):
    """diffusers' StableDiffusionPipeline over copies of the reference parts (DDIM with our float64 alphas-bar), each
    LoRA loaded with `load_lora_weights`, fused with `fuse_lora(lora_scale=scale)` and unloaded (the fused weights
    stay), then each embedding loaded with `load_textual_inversion`."""
    from diffusers import StableDiffusionPipeline

    unet, vae, text = copy.deepcopy(parts)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=copy.deepcopy(tokenizer), unet=unet,
                                   scheduler=float64_scheduler("DDIMScheduler"), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    for path, scale in loras:
        pipe.load_lora_weights(str(path))
        pipe.fuse_lora(lora_scale=scale)
        pipe.unload_lora_weights()
    for path, token in embeddings:
        pipe.load_textual_inversion(str(path), token=token)
    return pipe
