"""CLIP text tower with projection (OpenAI CLIP, Radford et al. 2021), for the CLIP score.

The transformer is Stable Diffusion 1's text encoder (models/clip.py, transformers' `text_model.*` names); this tower
adds what SD never uses: the pooled output at the end token and `text_projection` into the joint image-text space,
as transformers' `CLIPTextModelWithProjection`. OpenAI / open_clip files (`token_embedding.weight`,
`transformer.resblocks.*`, `ln_final.*`, `text_projection`) are converted to those names in `from_openai_keys`.
"""
import torch
from torch import nn

from models.checkpoint import CheckpointError, adopt_weights, format_keys
from models.clip import CLIPTextTransformer
from models.config import TextConfig
from models.layers import Linear
from sld.eval.clip_vision import HEAD_WIDTH, openai_block_keys

PREFIX = "text_model."
PROJECTION = "text_projection.weight"
OPENAI_BLOCKS = "transformer.resblocks."
OPENAI_RENAMES = {"token_embedding.weight": "embeddings.token_embedding.weight",
                  "positional_embedding": "embeddings.position_embedding.weight",
                  "ln_final.weight": "final_layer_norm.weight", "ln_final.bias": "final_layer_norm.bias"}


class CLIPTextModelWithProjection(nn.Module):
    def __init__(self, cfg: TextConfig, projection_dim: int):
        super().__init__()
        self.cfg = cfg
        self.text_model = CLIPTextTransformer(cfg)
        self.text_projection = Linear(cfg.width, projection_dim, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids [B, L] (start, text, end, padding) -> text embeddings [B, projection_dim] (CLIP's
        `encode_text`): the final-norm output at the first end token, which has the largest id, projected."""
        hidden = self.text_model(ids)
        pooled = hidden[torch.arange(ids.shape[0], device=ids.device), ids.argmax(dim=-1)]
        return self.text_projection(pooled)


def from_openai_keys(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """OpenAI / open_clip text keys -> transformers names (q/k/v split from in_proj, projection transposed)."""
    out = {}
    for key, value in sd.items():
        if key in OPENAI_RENAMES:
            out[PREFIX + OPENAI_RENAMES[key]] = value
        elif key == "text_projection":
            out[PROJECTION] = value.t()
        elif key.startswith(OPENAI_BLOCKS):
            out.update(openai_block_keys(key, value, OPENAI_BLOCKS, PREFIX + "encoder.layers."))
    return out


def text_weights(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The text tower of a CLIP state dict in either layout; image tower, logit scale and buffers dropped."""
    if "token_embedding.weight" in sd:
        sd = from_openai_keys(sd)
    return {key: value for key, value in sd.items()
            if (key.startswith(PREFIX) or key == PROJECTION) and not key.endswith("position_ids")}


def detect_text_config(sd: dict[str, torch.Tensor], path: str, activation: str = "quick_gelu") -> TextConfig:
    """Vocabulary, context length, width, depth and MLP width from tensor shapes (heads: width / 64)."""
    needed = (PREFIX + "embeddings.token_embedding.weight", PREFIX + "embeddings.position_embedding.weight",
              PREFIX + "encoder.layers.0.mlp.fc1.weight", PROJECTION)
    absent = [key for key in needed if key not in sd]
    if absent:
        raise CheckpointError(f"{path}: not a CLIP text tower with projection (missing {format_keys(absent)}); "
                              "expected the weights of a whole CLIP model, e.g. openai/clip-vit-large-patch14")
    vocab, width = sd[needed[0]].shape
    layers = len({key.split(".")[3] for key in sd if key.startswith(PREFIX + "encoder.layers.")})
    return TextConfig(vocab_size=vocab, max_length=sd[needed[1]].shape[0], width=width, layers=layers,
                      heads=max(1, width // HEAD_WIDTH), mlp_width=sd[needed[2]].shape[0], activation=activation)


def build_text_model(cfg: TextConfig, sd: dict[str, torch.Tensor], device: str | torch.device, dtype: torch.dtype,
                     path: str = "<state dict>") -> CLIPTextModelWithProjection:
    """Built on the meta device; every key and shape checked, then the tensors adopted in `dtype` on `device`."""
    with torch.device("meta"):
        model = CLIPTextModelWithProjection(cfg, sd[PROJECTION].shape[0])
    return adopt_weights(model, sd, device, dtype, f"{path}: weights do not match a CLIP text tower")
