"""The KL autoencoder (VAE) of Stable Diffusion, with attributes named after CompVis `ldm/modules/diffusionmodules/model.py`.

Loads `first_stage_model.*` with no renaming. `encode` returns the latent mean and `decode` takes latents already
divided by the scaling factor, as in shared/DESIGN.md.
"""
import torch
import torch.nn.functional as F
from torch import nn

from models.config import VAEConfig
from models.layers import Conv2d, GroupNorm, add_into, as_image, attend, compute_dtype, silu_after
from models.upsample import Upsample

NORM_EPS = 1e-6  # CompVis `Normalize`


def cpu_layout(x: torch.Tensor) -> torch.Tensor:
    """x in channels-last (NHWC) memory on the CPU, where oneDNN convolves it without reordering each input and output
    to its blocked layout and back: a 512x512 float32 decode took 10.2 s instead of 11.3 s (README, Performance)."""
    return x.contiguous(memory_format=torch.channels_last) if x.device.type == "cpu" else x


class ResnetBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, groups: int):
        super().__init__()
        self.norm1 = GroupNorm(groups, in_channels, eps=NORM_EPS)
        self.conv1 = Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = GroupNorm(groups, out_channels, eps=NORM_EPS)
        self.conv2 = Conv2d(out_channels, out_channels, 3, padding=1)
        self.nin_shortcut = Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(silu_after(self.norm1, x))
        h = self.conv2(silu_after(self.norm2, h))
        return add_into(h, self.conv2, self.nin_shortcut(x))


class AttnBlock(nn.Module):
    """Single-head self-attention over pixels with 1x1-conv projections."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.norm = GroupNorm(groups, channels, eps=NORM_EPS)
        self.q, self.k, self.v, self.proj_out = (Conv2d(channels, channels, 1) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2:]
        n = self.norm(x)
        q, k, v = (proj(n).flatten(2).transpose(1, 2) for proj in (self.q, self.k, self.v))
        out = as_image(attend(q, k, v, heads=1), h, w)
        return add_into(self.proj_out(out), self.proj_out, x)


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # asymmetric padding (right and bottom only), as CompVis Downsample
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class MidBlock(nn.Module):
    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, groups)
        self.attn_1 = AttnBlock(channels, groups)
        self.block_2 = ResnetBlock(channels, channels, groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class Level(nn.Module):
    """One resolution level: `block` (residual blocks) then an optional `downsample` or `upsample`."""

    def __init__(self, channels: list[int], groups: int, resample: str | None):
        super().__init__()
        self.block = nn.ModuleList(ResnetBlock(a, b, groups) for a, b in zip(channels, channels[1:]))
        if resample == "down":
            self.downsample = Downsample(channels[-1])
        elif resample == "up":
            self.upsample = Upsample(channels[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.block:
            x = block(x)
        if hasattr(self, "downsample"):
            x = self.downsample(x)
        if hasattr(self, "upsample"):
            x = self.upsample(x)
        return x


class Encoder(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        widths = [cfg.base_channels * m for m in cfg.channel_mult]
        last = len(widths) - 1
        self.conv_in = Conv2d(cfg.in_channels, cfg.base_channels, 3, padding=1)
        ins = [cfg.base_channels] + widths[:-1]
        self.down = nn.ModuleList(
            Level([c_in] + [c_out] * cfg.num_res_blocks, cfg.norm_groups, "down" if i != last else None)
            for i, (c_in, c_out) in enumerate(zip(ins, widths))
        )
        self.mid = MidBlock(widths[-1], cfg.norm_groups)
        self.norm_out = GroupNorm(cfg.norm_groups, widths[-1], eps=NORM_EPS)
        self.conv_out = Conv2d(widths[-1], 2 * cfg.z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = cpu_layout(self.conv_in(x))
        for level in self.down:
            h = level(h)
        return self.conv_out(silu_after(self.norm_out, self.mid(h)))


class Decoder(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        widths = [cfg.base_channels * m for m in cfg.channel_mult]
        self.conv_in = Conv2d(cfg.z_channels, widths[-1], 3, padding=1)
        self.mid = MidBlock(widths[-1], cfg.norm_groups)
        ins = widths[1:] + [widths[-1]]  # level i receives the width of level i + 1 (decoded top-down)
        self.up = nn.ModuleList(
            Level([c_in] + [c_out] * (cfg.num_res_blocks + 1), cfg.norm_groups, "up" if i != 0 else None)
            for i, (c_in, c_out) in enumerate(zip(ins, widths))
        )
        self.norm_out = GroupNorm(cfg.norm_groups, widths[0], eps=NORM_EPS)
        self.conv_out = Conv2d(widths[0], cfg.out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(cpu_layout(self.conv_in(z)))
        for level in reversed(self.up):
            h = level(h)
        return self.conv_out(silu_after(self.norm_out, h))


class AutoencoderKL(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.quant_conv = Conv2d(2 * cfg.z_channels, 2 * cfg.embed_dim, 1)
        self.post_quant_conv = Conv2d(cfg.embed_dim, cfg.z_channels, 1)

    def decode_dtype(self) -> torch.dtype:
        """float32 for float16 weights of a VAE whose activations overflow float16 (SDXL's; diffusers' `force_upcast`):
        every layer widens its weights to its input's dtype (models/layers.py), so the weights stay half in memory."""
        weight = self.post_quant_conv.weight
        if self.cfg.force_upcast and weight.dtype == torch.float16:
            return torch.float32
        return compute_dtype(weight)

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """Image in [-1, 1], [B, 3, H, W] -> mean of the latent posterior (before the scaling factor)."""
        moments = self.quant_conv(self.encoder(image.to(compute_dtype(self.quant_conv.weight))))
        return moments[:, : self.cfg.embed_dim].to(image.dtype).contiguous()

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents already divided by the scaling factor -> image in about [-1, 1] (not clamped)."""
        wide = z.to(self.decode_dtype())
        return self.decoder(self.post_quant_conv(wide)).to(z.dtype).contiguous()
