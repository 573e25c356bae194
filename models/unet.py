"""The Stable Diffusion UNet, with attributes named after the CompVis `openaimodel.py` keys.

Loads `model.diffusion_model.*` from an original single-file checkpoint with no renaming. Index
positions the checkpoint skips (SiLU, dropout) hold parameter-free modules so Sequential indices match.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from models.config import UNetConfig
from models.layers import (Conv2d, GroupNorm, LayerNorm, Linear, as_image, as_tokens, attend, compute_dtype,
                           heap_slices, hooked)
from models.upsample import Upsample


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding, cos half first (CompVis `timestep_embedding`, diffusers flip_sin_to_cos=True).

    Computed in float32 as both references do, whatever the model dtype.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def repeat_rows(x: torch.Tensor, rows: int) -> torch.Tensor:
    """x with its batch repeated (branch-major) to `rows` rows; x itself when it has them already."""
    return x if x.shape[0] == rows else x.repeat(rows // x.shape[0], *(1,) * (x.ndim - 1))


class ResBlock(nn.Module):
    def __init__(self, channels: int, emb_dim: int, out_channels: int, groups: int):
        super().__init__()
        self.in_layers = nn.Sequential(GroupNorm(groups, channels), nn.SiLU(), Conv2d(channels, out_channels, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), Linear(emb_dim, out_channels))
        self.out_layers = nn.Sequential(
            GroupNorm(groups, out_channels), nn.SiLU(), nn.Identity(), Conv2d(out_channels, out_channels, 3, padding=1)
        )
        self.skip_connection = nn.Identity() if channels == out_channels else Conv2d(channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers(x) + self.emb_layers(emb)[:, :, None, None]
        return self.skip_connection(x) + self.out_layers(h)


class CrossAttention(nn.Module):
    def __init__(self, dim: int, heads: int, context_dim: int | None = None, upcast: bool = False):
        super().__init__()
        context_dim = context_dim or dim
        self.heads = heads
        self.upcast = upcast
        self.to_q = Linear(dim, dim, bias=False)
        self.to_k = Linear(context_dim, dim, bias=False)
        self.to_v = Linear(context_dim, dim, bias=False)
        self.to_out = nn.Sequential(Linear(dim, dim), nn.Identity())

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        context = x if context is None else context
        return self.to_out(attend(self.to_q(x), self.to_k(context), self.to_v(context), self.heads, upcast=self.upcast))


class GEGLU(nn.Module):
    def __init__(self, dim: int, inner: int):
        super().__init__()
        self.proj = Linear(dim, inner * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # GLU variant with GELU gate (Shazeer 2020), as CompVis attention.py
        x, gate = self.proj(x).chunk(2, dim=-1)
        return x * F.gelu(gate)


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        self.net = nn.Sequential(GEGLU(dim, dim * mult), nn.Identity(), Linear(dim * mult, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Token-wise, so on the CPU it runs over row blocks whose widest temporary (GEGLU's projection) stays under
        HEAP_LIMIT, unless a hook watches one of its parts (which would then see the blocks)."""
        rows = x.shape[:-1].numel()
        blocks = heap_slices(rows * self.net[0].proj.out_features * x.element_size(), x.device)
        if blocks == 1 or hooked(self.net):
            return self.net(x)
        parts = x.reshape(rows, x.shape[-1]).chunk(blocks)
        return torch.cat([self.net(part) for part in parts]).view(*x.shape[:-1], -1)


class BasicTransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, context_dim: int, upcast: bool = False):
        super().__init__()
        self.attn1 = CrossAttention(dim, heads, upcast=upcast)
        self.ff = FeedForward(dim)
        self.attn2 = CrossAttention(dim, heads, context_dim, upcast=upcast)
        self.norm1, self.norm2, self.norm3 = LayerNorm(dim), LayerNorm(dim), LayerNorm(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """x with B rows and context with k * B rows: self-attention runs once, then x is repeated per branch."""
        x = x + self.attn1(self.norm1(x))
        x = repeat_rows(x, context.shape[0])
        x = x + self.attn2(self.norm2(x), context)
        return x + self.ff(self.norm3(x))


class SpatialTransformer(nn.Module):
    def __init__(self, channels: int, heads: int, depth: int, context_dim: int, linear: bool, groups: int,
                 upcast: bool = False):
        super().__init__()
        self.linear = linear
        self.norm = GroupNorm(groups, channels, eps=1e-6)
        self.proj_in = Linear(channels, channels) if linear else Conv2d(channels, channels, 1)
        self.transformer_blocks = nn.ModuleList(
            BasicTransformerBlock(channels, heads, context_dim, upcast) for _ in range(depth)
        )
        self.proj_out = Linear(channels, channels) if linear else Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """x with B rows, context with k * B rows (k guidance branches sharing x): the part before the first
        cross-attention runs once at batch B; the output has k * B rows, branch-major."""
        h, w = x.shape[2:]
        tokens = self.norm(x)
        if not self.linear:
            tokens = self.proj_in(tokens.contiguous(memory_format=torch.channels_last))
        tokens = as_tokens(tokens)
        if self.linear:
            tokens = self.proj_in(tokens)
        for block in self.transformer_blocks:
            tokens = block(tokens, context)
        if self.linear:
            tokens = self.proj_out(tokens)
        out = as_image(tokens, h, w)
        if not self.linear:
            out = self.proj_out(out)
        return repeat_rows(x, out.shape[0]) + out


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.op = Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class TimestepEmbedSequential(nn.Sequential):
    """Passes the time embedding to residual blocks and the context to transformers."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor, context: torch.Tensor,
                out_size: torch.Size | None = None) -> torch.Tensor:
        for layer in self:
            if isinstance(layer, ResBlock):
                x = layer(x, emb[: x.shape[0]])  # x may still be the shared B-row prefix (see UNet.forward)
            elif isinstance(layer, SpatialTransformer):
                x = layer(x, context)
            elif isinstance(layer, Upsample):
                x = layer(x, out_size)
            else:
                x = layer(x)
        return x


class UNet(nn.Module):
    def __init__(self, cfg: UNetConfig):
        super().__init__()
        self.cfg = cfg
        mc, emb_dim, groups = cfg.model_channels, cfg.model_channels * 4, cfg.norm_groups
        self.time_embed = nn.Sequential(Linear(mc, emb_dim), nn.SiLU(), Linear(emb_dim, emb_dim))

        if cfg.adm_in_channels:
            # sgm openaimodel.py: label_emb over SDXL's vector conditioning, added to the time embedding
            self.label_emb = nn.Sequential(nn.Sequential(Linear(cfg.adm_in_channels, emb_dim), nn.SiLU(),
                                                         Linear(emb_dim, emb_dim)))

        def transformer(ch: int, level: int) -> SpatialTransformer:
            return SpatialTransformer(ch, cfg.heads(ch), cfg.depth(level), cfg.context_dim, cfg.use_linear_proj, groups,
                                      cfg.upcast_attention)

        self.input_blocks = nn.ModuleList([TimestepEmbedSequential(Conv2d(cfg.in_channels, mc, 3, padding=1))])
        skip_channels, ch = [mc], mc
        last = len(cfg.channel_mult) - 1
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                layers = [ResBlock(ch, emb_dim, mc * mult, groups)]
                ch = mc * mult
                if level in cfg.attention_levels:
                    layers.append(transformer(ch, level))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                skip_channels.append(ch)
            if level != last:
                self.input_blocks.append(TimestepEmbedSequential(Downsample(ch)))
                skip_channels.append(ch)

        self.middle_block = TimestepEmbedSequential(
            ResBlock(ch, emb_dim, ch, groups), transformer(ch, last), ResBlock(ch, emb_dim, ch, groups)
        )

        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for i in range(cfg.num_res_blocks + 1):
                layers = [ResBlock(ch + skip_channels.pop(), emb_dim, mc * mult, groups)]
                ch = mc * mult
                if level in cfg.attention_levels:
                    layers.append(transformer(ch, level))
                if level != 0 and i == cfg.num_res_blocks:
                    layers.append(Upsample(ch))
                self.output_blocks.append(TimestepEmbedSequential(*layers))

        self.out = nn.Sequential(GroupNorm(groups, ch), nn.SiLU(), Conv2d(mc, cfg.out_channels, 3, padding=1))

    def forward(self, x: torch.Tensor, t: torch.Tensor | float, context: torch.Tensor,
                y: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, C, H, W], t scalar, [B] or [k * B], context [k * B, 77, context_dim] and, for SDXL, the vector
        conditioning y [k * B, adm_in_channels] -> model output [k * B, C, H, W].

        With k > 1 (guidance branches) every branch sees the same latents: x is repeated k times, branch-major.
        When the branches also share the embedding (timestep and y), everything before the first cross-attention
        (input conv, residual blocks, the first self-attention) runs once at batch B and is repeated after it.
        """
        branches, rest = divmod(context.shape[0], x.shape[0])
        if rest:
            raise ValueError(f"context batch {context.shape[0]} must be a multiple of the latent batch {x.shape[0]}")
        rows, out_dtype = context.shape[0], x.dtype
        dtype = compute_dtype(self.out[2].weight)
        t = torch.as_tensor(t, device=x.device).reshape(-1)
        t = t.repeat(rows // t.shape[0]) if t.shape[0] > 1 else t.expand(rows)
        x, context = x.to(dtype), context.to(dtype)
        emb = self.time_embed(timestep_embedding(t, self.cfg.model_channels).to(dtype))
        if self.cfg.adm_in_channels:
            if y is None or y.shape != (rows, self.cfg.adm_in_channels):
                raise ValueError(f"this UNet (SDXL) needs y [{rows}, {self.cfg.adm_in_channels}] (pooled text ; "
                                 f"micro-conditioning features), got {None if y is None else tuple(y.shape)}")
            emb = emb + self.label_emb(y.to(dtype))
        if branches > 1 and not torch.equal(emb.view(branches, x.shape[0], -1), emb[: x.shape[0]].expand(branches, -1, -1)):
            x = repeat_rows(x, rows)  # branches with different embeddings share nothing
        h, skips = x, []
        for block in self.input_blocks:
            h = block(h, emb, context)
            skips.append(repeat_rows(h, rows))
        h = self.middle_block(repeat_rows(h, rows), emb, context)
        for block in self.output_blocks:
            h = torch.cat([h, skips.pop()], dim=1)
            h = block(h, emb, context, skips[-1].shape[-2:] if skips else None)
        return self.out(h).to(out_dtype)
