"""Gated DeltaNet-2 in 60 lines: the whole chunkwise forward in one readable function.

In the spirit of Mamba-2's ``ssd_minimal.py``: plain PyTorch, the five stages of the derivation in
order, no custom backward (autograd differentiates it), no speed. q, k, g, b are [B, T, H, K];
v, w are [B, T, H, V] (one value head per key head); the state is [B, H, K, V], key-major.
tests/test_docs.py checks it against the float64 recurrence ``gdn2.ops.recurrent_gdn2``.
"""

import torch
import torch.nn.functional as F


# --8<-- [start:gdn2_chunked]
def gdn2_chunked(q, k, v, g, b, w, scale=None, chunk_size=64, initial_state=None):
    """o_t = S_tᵀ(scale·q_t) with S_t = S̄_t + k_t(w_t⊙v_t − S̄_tᵀ(b_t⊙k_t))ᵀ, S̄_t = Diag(e^{g_t}) S_{t-1}."""
    B, T, H, K = q.shape
    V, C = v.shape[-1], chunk_size
    scale = K**-0.5 if scale is None else scale
    pad = -T % C  # padded tokens have k = 0 and g = 0: they leave the state as it is
    q, k, g, b, v, w = (F.pad(x, (0, 0, 0, 0, 0, pad)) for x in (q, k, g, b, v, w))
    q, k, g, b, v, w = (x.view(B, -1, C, H, x.shape[-1]).permute(0, 3, 1, 2, 4) for x in (q, k, g, b, v, w))

    # (1) local cumulative decay, and every pairwise decay e^{G_r - G_s} (r >= s), masked before exp
    G = g.cumsum(-2)
    causal = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()[..., None]
    decay = torch.where(causal, G[..., :, None, :] - G[..., None, :, :], -torch.inf).exp()  # [.., C, C, K]
    strict = decay * (1 - torch.eye(C, dtype=q.dtype, device=q.device))[..., None]  # r > s only

    # (2) gated key interactions T and A = (I + T)^-1 (unit lower triangular)
    T_ = torch.einsum("...rd,...sd,...rsd->...rs", b * k, k, strict)
    eye = torch.eye(C, dtype=q.dtype, device=q.device).expand_as(T_)
    A = torch.linalg.solve_triangular(eye + T_, eye, upper=False, unitriangular=True)

    # (3) WY auxiliaries: one inverse for the erase side and the write side
    Y = A @ (G.exp() * b * k)  # [.., C, K]
    U = A @ (w * v)  # [.., C, V]

    # (4) state passing, chunk by chunk, and (5) the output of each chunk
    A_qk = scale * torch.einsum("...rd,...sd,...rsd->...rs", q, k, decay)
    q_gamma = scale * G.exp() * q
    k_tail = (G[..., -1:, :] - G).exp() * k  # each key decayed to the end of its chunk
    S = q.new_zeros(B, H, K, V) if initial_state is None else initial_state
    out = []
    for n in range(q.shape[2]):
        R = U[:, :, n] - Y[:, :, n] @ S  # the residual writes of chunk n
        out.append(q_gamma[:, :, n] @ S + A_qk[:, :, n] @ R)
        S = G[:, :, n, -1].exp()[..., None] * S + k_tail[:, :, n].transpose(-1, -2) @ R
    o = torch.stack(out, dim=2).reshape(B, H, -1, V).transpose(1, 2)[:, :T]
    return o, S
# --8<-- [end:gdn2_chunked]
