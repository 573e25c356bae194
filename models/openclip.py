"""OpenCLIP ViT-H/14 text tower as Stable Diffusion 2.x uses it (CompVis `FrozenOpenCLIPEmbedder`, layer="penultimate").

Attributes follow open_clip's names (`cond_stage_model.model.*`: token_embedding, positional_embedding,
transformer.resblocks.N.{ln_1, attn.in_proj_weight/in_proj_bias/out_proj, ln_2, mlp.c_fc, mlp.c_proj}, ln_final),
so an original SD 2 file loads with no renaming. SD 2 takes the penultimate block's output followed by ln_final:
the last block of the tower never runs, so it is not built (`drop_unused_openclip` removes it from files).
"""
import re

import torch
import torch.nn.functional as F
from torch import nn

from models import keys
from models.config import TextConfig
from models.layers import Embedding, LayerNorm, Linear, attend, compute_dtype

UNUSED = ("text_projection", "logit_scale", "attn_mask")


class MultiheadSelfAttention(nn.Module):
    """nn.MultiheadAttention's parameters (fused in_proj) with a causal mask, through scaled_dot_product_attention."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * width))
        self.out_proj = Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = F.linear(x, self.in_proj_weight.to(x.dtype), self.in_proj_bias.to(x.dtype)).chunk(3, dim=-1)
        return self.out_proj(attend(q, k, v, self.heads, causal=True))


class MLP(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.c_fc = Linear(width, hidden)
        self.c_proj = Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.gelu(self.c_fc(x)))


class ResidualAttentionBlock(nn.Module):
    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.ln_1 = LayerNorm(cfg.width)
        self.attn = MultiheadSelfAttention(cfg.width, cfg.heads)
        self.ln_2 = LayerNorm(cfg.width)
        self.mlp = MLP(cfg.width, cfg.mlp_width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(cfg) for _ in range(cfg.layers))


class OpenCLIPTextModel(nn.Module):
    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.token_embedding = Embedding(cfg.vocab_size, cfg.width)
        self.positional_embedding = nn.Parameter(torch.empty(cfg.max_length, cfg.width))
        self.transformer = Transformer(cfg)
        self.ln_final = LayerNorm(cfg.width)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Token plus positional embeddings, in the dtype the blocks compute in."""
        weights = self.positional_embedding
        dtype = compute_dtype(weights)  # half weights compute in float32 on CPUs without native half (models/layers.py)
        return self.token_embedding(ids).to(dtype) + weights[: ids.shape[1]].to(dtype)


class OpenCLIPTextEncoder(nn.Module):
    """Token ids [B, 77] -> context [B, 77, width]: every built block (the tower's penultimate output), then ln_final."""

    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.cfg = cfg
        self.model = OpenCLIPTextModel(cfg)

    @property
    def token_embedding(self) -> Embedding:
        return self.model.token_embedding

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.model.embed(ids)
        for block in self.model.transformer.resblocks:
            x = block(x)
        return self.model.ln_final(x).to(self.model.positional_embedding.dtype)


def drop_unused_openclip(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove what SD 2 never uses from a full OpenCLIP tower: the projection, logit scale, mask buffer and the last
    block. A full tower is recognised by its `text_projection`; diffusers-converted towers already end one block early."""
    if keys.OPENCLIP + "text_projection" not in sd:
        return {k: v for k, v in sd.items() if k.removeprefix(keys.OPENCLIP) not in UNUSED}
    blocks = re.compile(re.escape(keys.OPENCLIP) + r"transformer\.resblocks\.(\d+)\.")
    last = max(int(m.group(1)) for k in sd if (m := blocks.match(k)))
    unused = keys.OPENCLIP + f"transformer.resblocks.{last}."
    return {k: v for k, v in sd.items() if not k.startswith(unused) and k.removeprefix(keys.OPENCLIP) not in UNUSED}


class OpenCLIPTextModelWithProjection(OpenCLIPTextModel):
    def __init__(self, cfg: TextConfig):
        super().__init__(cfg)
        self.text_projection = nn.Parameter(torch.empty(cfg.width, cfg.projection_dim))


class OpenCLIPPooledTextEncoder(nn.Module):
    """SDXL's OpenCLIP ViT-bigG tower (sgm `FrozenOpenCLIPEmbedder2`, layer="penultimate", always_return_pooled):
    token ids [B, 77] -> (the penultimate block's output [B, 77, width], no ln_final; pooled [B, projection_dim] =
    ln_final of the last block's output at the end token (the largest id of the vocabulary) @ text_projection)."""

    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.cfg = cfg
        self.model = OpenCLIPTextModelWithProjection(cfg)

    @property
    def token_embedding(self) -> Embedding:
        return self.model.token_embedding

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.model.embed(ids)
        *blocks, last = self.model.transformer.resblocks
        for block in blocks:
            x = block(x)
        penultimate = x
        # the end token is the largest id of the vocabulary; textual-inversion ids lie above it and are skipped
        # (transformers pools at the first end token, kohya's SDXL pool_workaround likewise)
        end = torch.where(ids < self.cfg.vocab_size, ids, -1).argmax(dim=-1)
        ends = self.model.ln_final(last(x)[torch.arange(ids.shape[0], device=ids.device), end])
        pooled = ends @ self.model.text_projection.to(x.dtype)
        stored = self.model.positional_embedding.dtype
        return penultimate.to(stored), pooled.to(stored)
