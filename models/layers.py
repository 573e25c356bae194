"""Building blocks shared by the UNet, the VAE and the text encoder."""
import torch
import torch.nn.functional as F
from torch import nn


class GroupNorm(nn.GroupNorm):
    """GroupNorm whose statistics are computed in float32 for half inputs (CompVis `GroupNorm32`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype not in (torch.float16, torch.bfloat16):
            return super().forward(x)
        weight = None if self.weight is None else self.weight.float()
        bias = None if self.bias is None else self.bias.float()
        return F.group_norm(x.float(), self.num_groups, weight, bias, self.eps).to(x.dtype)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, causal: bool = False,
           upcast: bool = False) -> torch.Tensor:
    """Multi-head attention over [B, N, heads * d] tensors through scaled_dot_product_attention (scale d**-0.5).

    `upcast`: half-precision inputs are attended in float32 (SD 2.1's `upcast_attention`); no effect otherwise.
    """
    dtype = q.dtype
    if upcast and dtype in (torch.float16, torch.bfloat16):
        q, k, v = q.float(), k.float(), v.float()
    b, n, inner = q.shape
    d = inner // heads
    q, k, v = (t.view(b, -1, heads, d).transpose(1, 2) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    return out.transpose(1, 2).reshape(b, n, inner).to(dtype)
