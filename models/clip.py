"""CLIP ViT-L/14 text transformer as Stable Diffusion 1.x uses it.

Attribute names follow transformers' `CLIPTextModel`, which is what CompVis' `FrozenCLIPEmbedder` wraps,
so `cond_stage_model.transformer.text_model.*` loads with no renaming.
"""
import torch
import torch.nn.functional as F
from torch import nn

from models.config import TextConfig
from models.layers import Embedding, LayerNorm, Linear, attend, compute_dtype


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    # OpenAI CLIP's sigmoid approximation of GELU
    return x * torch.sigmoid(1.702 * x)


ACTIVATIONS = {"quick_gelu": quick_gelu, "gelu": F.gelu}


class CLIPAttention(nn.Module):
    def __init__(self, width: int, heads: int, causal: bool):
        super().__init__()
        self.heads, self.causal = heads, causal
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (Linear(width, width) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_proj(attend(self.q_proj(x), self.k_proj(x), self.v_proj(x), self.heads, causal=self.causal))


class CLIPMLP(nn.Module):
    def __init__(self, width: int, hidden: int, activation: str):
        super().__init__()
        self.activation = ACTIVATIONS[activation]
        self.fc1 = Linear(width, hidden)
        self.fc2 = Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.activation(self.fc1(x)))


class CLIPEncoderLayer(nn.Module):
    """Pre-norm transformer layer of CLIP's towers: causal in the text tower, bidirectional in the vision tower."""

    def __init__(self, width: int, heads: int, mlp_width: int, activation: str, causal: bool = True):
        super().__init__()
        self.self_attn = CLIPAttention(width, heads, causal)
        self.layer_norm1 = LayerNorm(width)
        self.mlp = CLIPMLP(width, mlp_width, activation)
        self.layer_norm2 = LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class CLIPEmbeddings(nn.Module):
    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.token_embedding = Embedding(cfg.vocab_size, cfg.width)
        self.position_embedding = Embedding(cfg.max_length, cfg.width)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.token_embedding(ids) + self.position_embedding.weight[: ids.shape[1]]


class CLIPEncoder(nn.Module):
    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.layers = nn.ModuleList(CLIPEncoderLayer(cfg.width, cfg.heads, cfg.mlp_width, cfg.activation) for _ in range(cfg.layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class CLIPTextTransformer(nn.Module):
    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.embeddings = CLIPEmbeddings(cfg)
        self.encoder = CLIPEncoder(cfg)
        # SDXL takes the penultimate hidden state without the final norm: its last layer and norm are not built
        self.final_layer_norm = LayerNorm(cfg.width) if cfg.final_norm else nn.Identity()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        embedded = self.embeddings(ids)
        hidden = self.encoder(embedded.to(compute_dtype(self.embeddings.token_embedding.weight)))
        return self.final_layer_norm(hidden).to(embedded.dtype)


class CLIPTextModel(nn.Module):
    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.text_model = CLIPTextTransformer(cfg)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.text_model(ids)


class CLIPTextEncoder(nn.Module):
    """Token ids [B, 77] -> context [B, 77, width], the last layer after the final norm (CompVis `FrozenCLIPEmbedder`)."""

    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.cfg = cfg
        self.transformer = CLIPTextModel(cfg)

    @property
    def token_embedding(self) -> Embedding:
        return self.transformer.text_model.embeddings.token_embedding

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.transformer(ids)
