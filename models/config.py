"""Configuration dataclasses: one per network, one per model family (nanoGPT's GPTConfig style).

Sizes are derived from checkpoint tensors by `models.detect`; the family fixes what shapes cannot tell
(attention heads, latent scaling factor, prediction type).
"""
from dataclasses import dataclass


@dataclass(frozen=True)
class UNetConfig:
    in_channels: int = 4
    out_channels: int = 4
    model_channels: int = 320
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attention_levels: tuple[int, ...] = (0, 1, 2)  # levels (0 = full resolution) with a spatial transformer
    num_heads: int = 8  # SD 1: a fixed head count at every level
    num_head_channels: int = -1  # SD 2: a fixed head width instead (-1: use num_heads)
    transformer_depth: int | tuple[int, ...] = 1  # one for every level, or per level (SDXL: 0, 2, 10)
    context_dim: int = 768
    use_linear_proj: bool = False  # SD 2 projects in/out of the transformer with Linear, SD 1 with 1x1 conv
    upcast_attention: bool = False  # SD 2.1: attention scores in float32 when the model runs in half precision
    norm_groups: int = 32
    adm_in_channels: int = 0  # SDXL: width of the `label_emb` input (pooled text ; micro-conditioning features)

    def depth(self, level: int) -> int:
        """Transformer blocks per spatial transformer at `level`; the middle block takes the last level's."""
        return self.transformer_depth if isinstance(self.transformer_depth, int) else self.transformer_depth[level]

    def heads(self, channels: int) -> int:
        return channels // self.num_head_channels if self.num_head_channels > 0 else self.num_heads


@dataclass(frozen=True)
class VAEConfig:
    in_channels: int = 3
    out_channels: int = 3
    base_channels: int = 128
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    z_channels: int = 4
    embed_dim: int = 4
    norm_groups: int = 32
    scaling_factor: float = 0.18215
    force_upcast: bool = False  # SDXL: float16 weights overflow, so decode in float32 (diffusers' `force_upcast`)

    @property
    def downscale(self) -> int:
        return 2 ** (len(self.channel_mult) - 1)


@dataclass(frozen=True)
class TextConfig:
    kind: str = "clip"  # "clip": OpenAI CLIP (SD 1, transformers names); "openclip": OpenCLIP (SD 2, open_clip names)
    vocab_size: int = 49408
    max_length: int = 77
    width: int = 768
    layers: int = 12
    heads: int = 12
    mlp_width: int = 3072  # hidden width of each layer's MLP (fc1 / c_fc outputs)
    activation: str = "quick_gelu"  # SD 1 (OpenAI CLIP); SD 2's OpenCLIP uses "gelu"
    pad_token_id: int | None = None  # None: pad with the end token (SD 1); SD 2's OpenCLIP tokenizer pads with 0
    final_norm: bool = True  # SDXL's CLIP tower: penultimate hidden state, no final layer norm
    projection_dim: int = 0  # SDXL's OpenCLIP tower: width of the pooled output (text_projection); 0: none


@dataclass(frozen=True)
class ModelConfig:
    family: str
    unet: UNetConfig
    vae: VAEConfig
    text: TextConfig
    prediction: str = "epsilon"  # "epsilon" | "v"
    text2: TextConfig | None = None  # SDXL's second text tower (OpenCLIP ViT-bigG); its context follows the first's
