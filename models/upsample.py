"""Nearest-neighbour 2x upsampling then a 3x3 convolution (CompVis `Upsample` with `with_conv`), for the UNet and the
VAE decoder.

On the CPU the two run fused, as 2x2 convolutions of the small input, one per output pixel phase (the sub-pixel
convolution identity of Shi et al. 2016, read backwards): 16 instead of 36 multiply-adds per input pixel, and no 4x
upsampled copy of the input. A 512x512 VAE decode spends 0.7 TFLOP, over a quarter of its convolutions, in these layers.
"""
import torch
import torch.nn.functional as F
from torch import nn

from models.layers import Conv2d, cast_like, heap_slices, hooked, output_slices

# Below this many input pixels (batch x height x width) the phase kernels, built on every call, cost about what the
# multiply-adds they save do (1280 channels: 192 pixels, batch 3 at 8x8, 11% slower; 256, batch 1 at 16x16, 20% faster).
MIN_PIXELS = 256

# Kernel taps landing on each input row when rows are repeated twice: an even output row reads input rows (i - 1, i)
# with kernel rows (0, 1 + 2), an odd one reads (i, i + 1) with kernel rows (0 + 1, 2). The same holds for columns.
PHASE_TAPS = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]], [[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])


def phase_kernels(weight: torch.Tensor) -> torch.Tensor:
    """[O, I, 3, 3] -> [2 * 2 * O, I, 2, 2]: the 2x2 kernel of every output phase (row parity, column parity)."""
    taps = PHASE_TAPS.to(weight)
    return torch.einsum("yra,xsb,oiab->yxoirs", taps, taps, weight).flatten(0, 2)


def memory_format(x: torch.Tensor) -> torch.memory_format:
    channels_last = not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
    return torch.channels_last if channels_last else torch.contiguous_format


def conv_after_upsample(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """conv3x3(nearest_upsample_2x(x), padding=1) from x directly: phase (dy, dx) of the output is a 2x2 convolution
    of x with padding 1, cropped at offset (dy, dx). Output channels run in slices that keep each slice's phase
    kernels under HEAP_LIMIT."""
    b, _, h, w = x.shape
    out = torch.empty(b, weight.shape[0], 2 * h, 2 * w, dtype=x.dtype, device=x.device, memory_format=memory_format(x))
    start = 0
    slices = heap_slices(weight.numel() * 16 // 9 * x.element_size(), x.device)
    for part, part_bias in output_slices(weight, bias, slices):
        n = part.shape[0]
        phase_bias = None if part_bias is None else cast_like(part_bias, x).repeat(4)
        phases = F.conv2d(x, phase_kernels(cast_like(part, x)), phase_bias, padding=1).unflatten(1, (2, 2, n))
        for dy in (0, 1):
            for dx in (0, 1):
                out[:, start : start + n, dy::2, dx::2] = phases[:, dy, dx, :, dy : dy + h, dx : dx + w]
        start += n
    return out


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, size: torch.Size | None = None) -> torch.Tensor:
        """`size`: the output resolution when it is not twice the input's (the UNet's skip resolution for latents
        not divisible by 2**levels, as diffusers' upsample_size)."""
        doubled = (2 * x.shape[-2], 2 * x.shape[-1])
        size = doubled if size is None else tuple(size)
        if size == doubled and self.can_fuse(x):
            return conv_after_upsample(x, self.conv.weight, self.conv.bias)
        return self.conv(F.interpolate(x, size=size, mode="nearest"))

    def can_fuse(self, x: torch.Tensor) -> bool:
        """The fused path: on the CPU, for enough pixels, with the plain convolution (not one replaced or wrapped)
        and no hook that expects to see the upsampled input."""
        pixels = x.shape[0] * x.shape[-2] * x.shape[-1]
        return (x.device.type == "cpu" and pixels >= MIN_PIXELS and type(self.conv) is Conv2d
                and not hooked(self.conv))
