"""RMSNorm and the gated output norm of the layer (docs page "The layer").

    RMSNorm(x) = x / sqrt(mean(x²) + eps) · weight,    GatedRMSNorm(o, z) = RMSNorm(o) · SiLU(z)

Both normalise the last axis in float32 (float64 stays float64) and return the input's dtype.
"""

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

__all__ = ["RMSNorm", "GatedRMSNorm"]


def _rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    xf = x.to(torch.float64 if x.dtype == torch.float64 else torch.float32)
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype) * weight.to(x.dtype)


class RMSNorm(nn.Module):
    """RMSNorm over the last axis of size ``dim``, learnable scale initialised to 1."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"

    def forward(self, x: Float[Tensor, "*lead D"]) -> Float[Tensor, "*lead D"]:
        return _rms_norm(x, self.weight, self.eps)


class GatedRMSNorm(RMSNorm):
    """RMSNorm(o) · SiLU(z) per head: ``o`` and ``z`` are [..., V], the scale is shared by the heads."""

    def forward(self, o: Float[Tensor, "*lead V"], z: Float[Tensor, "*lead V"]) -> Float[Tensor, "*lead V"]:
        return _rms_norm(o, self.weight, self.eps) * F.silu(z.to(o.dtype))
