"""The layer in a few lines: a full forward, a padding mask, packed documents, prefill + decoding, and the
operator itself.

Run: python examples/quickstart.py
"""

import torch

import gdn2

torch.manual_seed(0)
layer = gdn2.GDN2(hidden_size=256, num_heads=4, head_dim=64, backend="auto").double()
x = torch.randn(2, 100, 256, dtype=torch.float64)
y = layer(x)                                                   # [2, 100, 256]

# Left padding: the second sequence has 60 real tokens; padded positions come out as zeros.
mask = torch.ones(2, 100, dtype=torch.long)
mask[1, :40] = 0
y_pad = layer(x, attention_mask=mask)
alone = layer(x[1:, 40:])
print("padded row equals the sequence alone:", torch.allclose(y_pad[1, 40:], alone[0]))

# Packed documents, as pre-training feeds them: one row, cu_seqlens says where each document starts.
cu_seqlens = torch.tensor([0, 30, 100])
y_packed = layer(x[:1], cu_seqlens=cu_seqlens)
second = layer(x[:1, 30:])
print("packed documents equal each document alone:", torch.allclose(y_packed[0, 30:], second[0]))

# Prefill, then one token at a time: the cache holds the state and the conv tails, nothing grows.
layer.eval()
cache = gdn2.Cache()
with torch.no_grad():
    layer(x[:, :90], cache=cache, use_cache=True)
    steps = [layer(x[:, t:t + 1], cache=cache, use_cache=True) for t in range(90, 100)]
print("decoding equals the full forward:", torch.allclose(torch.cat(steps, 1), y[:, 90:]))
print("decoding state:", cache)

# The operator (see the docs page "The operator contract"): q, k, g, b [B, T, H, K]; v, w [B, T, HV, V];
# it returns (o, final_state).
B, T, H, HV, K, V = 1, 50, 2, 4, 32, 32
q, k = torch.randn(B, T, H, K), torch.randn(B, T, H, K)
v, w = torch.randn(B, T, HV, V), torch.rand(B, T, HV, V)
g, b = -torch.rand(B, T, H, K), torch.rand(B, T, H, K)
o, state = gdn2.ops.chunk_gdn2(q, k, v, g, b, w, output_final_state=True, use_qk_l2norm_in_kernel=True)
o_ref, _ = gdn2.ops.recurrent_gdn2(q, k, v, g, b, w, use_qk_l2norm_in_kernel=True)
print("o", tuple(o.shape), "state", tuple(state.shape), "max |chunk − recurrent|:", (o - o_ref).abs().max().item())
