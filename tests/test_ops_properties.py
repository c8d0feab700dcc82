"""Property tests: the chunkwise form equals the recurrence on any small problem hypothesis draws."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gdn2.ops import chunk_gdn2, recurrent_gdn2

from gdn2_testing import TOLERANCES, assert_close, make_inputs

F64 = TOLERANCES["reference-float64"]


@settings(max_examples=30, deadline=None)
@given(
    B=st.integers(1, 2), T=st.integers(1, 40), H=st.integers(1, 2), G=st.integers(1, 3),
    K=st.integers(1, 9), V=st.integers(1, 9), C=st.integers(1, 20),
    g_min=st.sampled_from([-0.1, -3.0, -20.0]), b_max=st.sampled_from([0.0, 1.0, 2.0]),
    h0=st.booleans(), seed=st.integers(0, 2**31 - 1),
)
def test_chunk_equals_recurrence_anywhere(B, T, H, G, K, V, C, g_min, b_max, h0, seed):
    x = make_inputs(B, T, H, H * G, K, V, g_min=g_min, b_max=b_max, initial_state=h0, seed=seed)
    o_ref, ht_ref = recurrent_gdn2(**x, output_final_state=True)
    o, ht = chunk_gdn2(**x, output_final_state=True, chunk_size=C)
    assert_close("o", o, o_ref, F64[0])
    assert_close("ht", ht, ht_ref, F64[0])


@settings(max_examples=15, deadline=None)
@given(lengths=st.lists(st.integers(0, 30), min_size=1, max_size=5), C=st.sampled_from([4, 16, 64]),
       seed=st.integers(0, 2**31 - 1))
def test_packed_equals_recurrence_anywhere(lengths, C, seed):
    T = sum(lengths)
    x = make_inputs(1, T, 1, 2, 4, 4, N=len(lengths), seed=seed)
    cu = torch.tensor([0, *lengths]).cumsum(0)
    o_ref, ht_ref = recurrent_gdn2(**x, output_final_state=True, cu_seqlens=cu)
    o, ht = chunk_gdn2(**x, output_final_state=True, cu_seqlens=cu, chunk_size=C)
    assert_close("o", o, o_ref, F64[0])
    assert_close("ht", ht, ht_ref, F64[0])
