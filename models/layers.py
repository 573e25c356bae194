"""Building blocks shared by the UNet, the VAE and the text encoder, and the half-precision compute policy.

Half weights (bfloat16, float16) compute in their own dtype where the hardware multiplies them natively (GPUs;
CPUs with AVX512-BF16 or AMX). On other CPUs oneDNN emulates half dot products several times slower than float32,
so there the activations run in float32 and each layer widens its half weights as it uses them: the weights keep
half the memory and the result is at least as accurate. `Linear`, `Conv2d`, `LayerNorm` and `GroupNorm` follow the
dtype of their input; a network casts its input once to `compute_dtype(...)` and its output back.
"""
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.module import _global_forward_hooks, _global_forward_pre_hooks

HALF = (torch.float16, torch.bfloat16)

# glibc's largest mmap threshold on 64-bit Linux: a bigger allocation is a fresh mapping whose pages the kernel
# zero-fills on first touch (~0.2 ms per MB on the benchmark machine); smaller ones reuse freed heap memory.
HEAP_LIMIT = 32 << 20


@lru_cache(maxsize=None)
def cpu_multiplies_natively(dtype: torch.dtype) -> bool:
    """Whether this CPU has native dot products for `dtype` (bfloat16: AVX512-BF16 or AMX; float16: AMX-FP16)."""
    def has(feature: str) -> bool:
        return bool(getattr(torch.cpu, f"_is_{feature}_supported", lambda: False)())

    if dtype == torch.bfloat16:
        return has("avx512_bf16") or has("amx_tile")
    if dtype == torch.float16:
        return has("amx_fp16")
    return True


def compute_dtype(weight: torch.Tensor) -> torch.dtype:
    """The dtype a network's activations use for weights like `weight` (float32 for half weights on a CPU
    without native half arithmetic; the weights' own dtype everywhere else)."""
    if weight.dtype in HALF and weight.device.type == "cpu" and not cpu_multiplies_natively(weight.dtype):
        return torch.float32
    return weight.dtype


def cast_like(param: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor | None:
    """`param` in the dtype of `x` (no copy when they already agree)."""
    return None if param is None else param.to(x.dtype)


class Linear(nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, cast_like(self.weight, x), cast_like(self.bias, x))


def heap_slices(nbytes: int, device: torch.device) -> int:
    """How many slices (a power of two: SD's channel counts then split into multiples of oneDNN's 16-wide blocks)
    keep a CPU temporary of `nbytes` under HEAP_LIMIT; 1 on other devices."""
    if device.type != "cpu" or nbytes <= HEAP_LIMIT:
        return 1
    return 1 << (-(-nbytes // HEAP_LIMIT) - 1).bit_length()


def output_slices(weight: torch.Tensor, bias: torch.Tensor | None, slices: int) -> list:
    """(weight, bias) pairs of `slices` groups of output channels."""
    biases = (None,) * slices if bias is None else bias.chunk(slices)
    return list(zip(weight.chunk(slices), biases))


class Conv2d(nn.Conv2d):
    """On the CPU a convolution whose weight exceeds HEAP_LIMIT runs in slices of output channels (bit-identical):
    oneDNN reorders the weight into a fresh buffer on every call, and under the limit that buffer comes from the heap
    (3x3, 1280 -> 1280 channels, batch 3: 35 -> 20 ms at 8x8, 91 -> 72 ms at 16x16)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        slices = heap_slices(self.weight.numel() * x.element_size(), x.device) if self.groups == 1 else 1
        parts = output_slices(self.weight, self.bias, slices)
        outs = [self._conv_forward(x, cast_like(w, x), cast_like(b, x)) for w, b in parts]
        return outs[0] if slices == 1 else torch.cat(outs, dim=1)


class LayerNorm(nn.LayerNorm):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.normalized_shape, cast_like(self.weight, x), cast_like(self.bias, x), self.eps)


class Embedding(nn.Embedding):
    """nn.Embedding without a random init on the meta device: there `normal_` falls back to a Python reference
    whose first use costs over a second, most of a checkpoint load (the loader builds on meta, weights follow)."""

    def reset_parameters(self) -> None:
        if not self.weight.is_meta:
            super().reset_parameters()


class GroupNorm(nn.GroupNorm):
    """GroupNorm whose statistics are computed in float32 for half inputs (CompVis `GroupNorm32`).

    CUDA's group_norm kernel already accumulates half inputs in float32 (ATen `acc_type`), so there the input is not
    widened: the two extra casts cost 15% of a float16 VAE decode on an H100 (scripts/benchmark.py --device cuda).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        wide = torch.float32 if x.dtype in HALF and x.device.type != "cuda" else x.dtype
        weight = None if self.weight is None else self.weight.to(wide)
        bias = None if self.bias is None else self.bias.to(wide)
        return F.group_norm(x.to(wide), self.num_groups, weight, bias, self.eps).to(x.dtype)


def hooked(module: nn.Module) -> bool:
    """Whether a forward hook or pre-hook watches `module` or any module inside it (or every module)."""
    return bool(_global_forward_hooks or _global_forward_pre_hooks) or any(
        m._forward_hooks or m._forward_pre_hooks for m in module.modules())


def overwritable(out: torch.Tensor, producer: nn.Module) -> bool:
    """Whether `out`, just returned by `producer`, may be overwritten in place: no autograd graph records it and no
    forward hook (the producer's or a global one) has been handed it. Saves allocating a full-size buffer."""
    recorded = torch.is_grad_enabled() and out.requires_grad
    return not (recorded or producer._forward_hooks or _global_forward_hooks)


def silu_after(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """silu(norm(x)), in the norm's output buffer where `overwritable`."""
    h = norm(x)
    return F.silu(h, inplace=overwritable(h, norm))


def add_into(out: torch.Tensor, producer: nn.Module, other: torch.Tensor) -> torch.Tensor:
    """out + other (a residual sum), in `out`'s buffer where `overwritable`."""
    return out.add_(other) if overwritable(out, producer) else out + other


def as_tokens(x: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> [B, H * W, C]; a view when x is channels-last (NHWC memory holds exactly those rows)."""
    return x.permute(0, 2, 3, 1).flatten(1, 2)


def as_image(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """[B, H * W, C] -> [B, C, H, W], a channels-last view of the same memory."""
    return tokens.unflatten(1, (h, w)).permute(0, 3, 1, 2)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, causal: bool = False,
           upcast: bool = False) -> torch.Tensor:
    """Multi-head attention over [B, N, heads * d] tensors through scaled_dot_product_attention (scale d**-0.5).

    `upcast`: half-precision inputs are attended in float32 (SD 2.1's `upcast_attention`); no effect otherwise.
    """
    dtype = q.dtype
    if upcast and dtype in HALF:
        q, k, v = q.float(), k.float(), v.float()
    b, n, inner = q.shape
    d = inner // heads
    q, k, v = (t.view(b, -1, heads, d).transpose(1, 2) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    return out.transpose(1, 2).reshape(b, n, inner).to(dtype)
