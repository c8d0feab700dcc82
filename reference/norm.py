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


def _check_last_dim(name: str, x: object, dim: int) -> None:
    if not isinstance(x, Tensor) or x.dim() < 1 or x.shape[-1] != dim:
        got = list(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a tensor [..., {dim}], got {got}")


class RMSNorm(nn.Module):
    """RMSNorm over the last axis of size ``dim``, learnable scale initialised to 1."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"

    def forward(self, x: Float[Tensor, "*lead D"]) -> Float[Tensor, "*lead D"]:
        _check_last_dim("x", x, self.weight.shape[0])
        return _rms_norm(x, self.weight, self.eps)


class GatedRMSNorm(RMSNorm):
    """RMSNorm(o) · SiLU(z) per head: ``o`` and ``z`` are [..., V], the scale is shared by the heads."""

    def forward(self, o: Float[Tensor, "*lead V"], z: Float[Tensor, "*lead V"]) -> Float[Tensor, "*lead V"]:
        _check_last_dim("o", o, self.weight.shape[0])
        # packed rows under torch.compile have data-dependent lengths: only the static sizes are compared there
        if not isinstance(z, Tensor) or z.dim() != o.dim() or z.shape[-1] != o.shape[-1] or (
                not torch.compiler.is_compiling() and z.shape != o.shape):
            got = list(z.shape) if isinstance(z, Tensor) else type(z).__name__
            raise ValueError(f"z must have o's shape {list(o.shape)}, got {got}")
        return _rms_norm(o, self.weight, self.eps) * F.silu(z.to(o.dtype))
