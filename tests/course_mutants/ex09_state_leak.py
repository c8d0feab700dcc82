"""Exercise 9, a typical wrong answer: the state carried from one packed sequence into the next."""

import torch

from gdn2.ops.chunk import chunk_forward

DIAGNOSIS = "state-leak"


def packed_chunk_gdn2(q, k, v, g, b, w, scale, cu_seqlens, initial_state, chunk_size):
    H, K, HV, V = q.shape[2], q.shape[3], v.shape[2], v.shape[3]
    C = chunk_size
    bounds = cu_seqlens.tolist()
    S = initial_state[0].view(1, H, HV // H, K, V)
    outs, finals = [], []
    for s, e in zip(bounds[:-1], bounds[1:]):
        NC = max(1, -(-(e - s) // C))

        def chunked(x, s=s, e=e, NC=NC):
            padded = x.new_zeros(1, NC * C, *x.shape[2:])
            padded[0, : e - s] = x[0, s:e]
            return padded.view(1, NC, C, H, x.shape[2] // H, x.shape[3]).permute(0, 3, 4, 1, 2, 5)

        qc, kc, gc, bc = (chunked(x)[:, :, 0] for x in (q, k, g, b))
        o, S, _ = chunk_forward(qc, kc, chunked(v), gc, bc, chunked(w), scale, S)
        outs.append(o.permute(0, 3, 4, 1, 2, 5).reshape(NC * C, HV, V)[: e - s])
        finals.append(S.reshape(HV, K, V))
    return torch.cat(outs)[None], torch.stack(finals)
