"""Causal depthwise short convolution (paper Fig. 1; docs page "The layer"), packed-sequence and cache aware.

    y_t = SiLU( Σ_{s=0}^{W-1} weight[:, W-1-s] ⊙ x_{t-s} ),   x_{t-s} = 0 before the sequence starts

(or the cached inputs of the previous call, when decoding). W is ``conv_size``. With ``cu_seqlens``
the input is one packed row of N sequences and no tap reaches across a boundary. The conv state of
one sequence is its last W-1 inputs, oldest first, so prefill followed by token-by-token decoding
equals one call on the whole sequence.
"""

import torch
import torch.nn.functional as F
from jaxtyping import Float, Integer
from torch import Tensor, nn

from .ops._contract import check_cu_seqlens

__all__ = ["ShortConvolution"]


class ShortConvolution(nn.Module):
    """Depthwise causal Conv1d over T with a SiLU, for ``channels`` channels and ``conv_size`` taps."""

    def __init__(self, channels: int, conv_size: int) -> None:
        super().__init__()
        self.channels, self.conv_size = channels, conv_size
        # nn.Conv1d's own initialisation (Kaiming-uniform, fan-in W); depthwise, no bias.
        self.weight = nn.Parameter(nn.Conv1d(channels, channels, conv_size, groups=channels, bias=False).weight)

    def extra_repr(self) -> str:
        return f"{self.channels}, conv_size={self.conv_size}"

    def forward(
        self,
        x: Float[Tensor, "B T D"],
        state: Float[Tensor, "N D Wm1"] | None = None,
        cu_seqlens: Integer[Tensor, " Np1"] | None = None,
    ) -> tuple[Float[Tensor, "B T D"], Float[Tensor, "N D Wm1"]]:
        """Returns ``(y, new_state)``; ``state`` holds the previous W-1 inputs of each sequence.

        Shapes are checked here; the values of ``cu_seqlens`` are the caller's (the layer checks them).
        """
        W, D = self.conv_size, self.channels
        if not isinstance(x, Tensor) or x.dim() != 3 or x.shape[2] != D:
            got = list(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x must be a [B, T, channels = {D}] tensor, got {got}")
        N = x.shape[0]
        if cu_seqlens is not None:
            if N != 1:
                raise ValueError(f"cu_seqlens packs sequences into one row (B = 1), got B = {N}")
            N = check_cu_seqlens(cu_seqlens, x.shape[1], check_values=False)
        if state is not None and (not isinstance(state, Tensor) or tuple(state.shape) != (N, D, W - 1)):
            got = list(state.shape) if isinstance(state, Tensor) else type(state).__name__
            raise ValueError(f"state must be [N, channels, conv_size - 1] = {[N, D, W - 1]}, got {got}")
        if cu_seqlens is None:
            N, T, D = x.shape
            past = x.new_zeros(N, W - 1, D) if state is None else state.transpose(1, 2).to(x.dtype)
            ext = torch.cat([past, x], dim=1)                                   # [B, W-1+T, D]
            # T = 0: nothing to convolve, but y still depends on x and the weight (gradients of zeros)
            y = (F.conv1d(ext.transpose(1, 2), self.weight.to(x.dtype), groups=D).transpose(1, 2) if T
                 else x * 0 + self.weight.sum().to(x.dtype) * 0)
            new_state = ext[:, ext.shape[1] - (W - 1):].transpose(1, 2)         # [B, D, W-1]
            return F.silu(y), new_state.contiguous()
        return self._packed(x, state, cu_seqlens)

    def _packed(self, x: Tensor, state: Tensor | None, cu_seqlens: Tensor) -> tuple[Tensor, Tensor]:
        """The same taps on one packed row: tap s of token t reads x_{t-s} only inside t's sequence."""
        W, D, T = self.conv_size, x.shape[2], x.shape[1]
        N = cu_seqlens.numel() - 1
        starts, lengths = cu_seqlens[:-1].long(), cu_seqlens.diff().long()
        seq = torch.repeat_interleave(torch.arange(N, device=x.device), lengths, output_size=T)  # [T]
        pos = torch.arange(T, device=x.device) - starts[seq]                   # position inside its sequence
        past = x.new_zeros(N, D, W - 1) if state is None else state.to(x.dtype)
        # Sequence n extended by its past is past_n (W-1 rows) then x_n; one table holds both, and
        # row e of extended sequence n is source[index(n, e)].
        source = torch.cat([past.transpose(1, 2).reshape(N * (W - 1), D), x[0]])   # [N(W-1) + T, D]

        def index(n: Tensor, e: Tensor) -> Tensor:
            return torch.where(e >= W - 1, N * (W - 1) + starts[n] + e - (W - 1), n * (W - 1) + e)

        weight = self.weight.to(x.dtype)[:, 0]                                  # [D, W]
        y = sum(weight[:, W - 1 - s] * source[index(seq, pos + (W - 1) - s)] for s in range(W))  # [T, D]
        n_all = torch.arange(N, device=x.device)
        tail = [source[index(n_all, lengths + j)] for j in range(W - 1)]          # W-1 of [N, D]
        new_state = torch.stack(tail, dim=-1) if tail else x.new_zeros(N, D, 0)   # [N, D, W-1]
        return F.silu(y)[None], new_state
