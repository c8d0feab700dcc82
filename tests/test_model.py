"""The small LM: shapes and gradients, causality, decoding equals the full forward (with the
sliding-window hybrid), packed documents equal each document alone, constant decoding memory, and a loss
that drops on the embedded text."""

import math

import pytest
import torch

import gdn2.model
from gdn2 import GDN2LM, Cache, GDN2LMConfig
from gdn2.cache import WindowState
from gdn2.data import corpus_tensor
from gdn2.train import TrainConfig, _batches, evaluate, train

from gdn2_testing import TOLERANCES, assert_close, saved_bytes

TOL64 = TOLERANCES["reference-float64"][0]


def tiny(seed: int = 0, dtype=torch.float64, **kw) -> GDN2LM:
    torch.manual_seed(seed)
    args = dict(hidden_size=32, num_layers=3, num_heads=2, head_dim=8, swa_layers=(1,), swa_window=5,
                swa_heads=2, backend="reference")
    return GDN2LM(GDN2LMConfig(**{**args, **kw})).to(dtype)


def test_forward_backward_shapes():
    model = tiny(dtype=torch.float32)
    ids = torch.randint(0, 256, (3, 17))
    logits = model(ids)
    assert logits.shape == (3, 17, 256) and logits.dtype == torch.float32
    loss = model.loss(ids)
    loss.backward()
    assert loss.ndim == 0 and math.isfinite(loss.item())
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert model.embed.weight.grad.abs().sum() > 0   # tied head: embedding gets gradient from both ends
    assert sum(1 for m in model.modules() if type(m).__name__ == "SlidingWindowAttention") == 1


def test_lm_is_causal():
    model = tiny()
    ids = torch.randint(0, 256, (2, 30))
    other = ids.clone()
    other[:, 20:] = torch.randint(0, 256, (2, 10))
    a, b = model(ids), model(other)
    assert torch.equal(a[:, :20], b[:, :20])
    assert not torch.allclose(a[:, 20:], b[:, 20:])


@pytest.mark.parametrize("prefill", [pytest.param(2, id="prefill2-below-window"), pytest.param(9, id="prefill9")])
@pytest.mark.parametrize("swa", [pytest.param((), id="gdn2-only"), pytest.param((1,), id="hybrid-swa5")])
def test_decoding_equals_full_forward(swa, prefill):
    model = tiny(swa_layers=swa).eval()
    ids = torch.randint(0, 256, (2, 23))
    full = model(ids)
    cache = Cache()
    outs = [model(ids[:, :prefill], cache=cache, use_cache=True)]
    outs += [model(ids[:, t:t + 1], cache=cache, use_cache=True) for t in range(prefill, 23)]
    assert_close("logits", torch.cat(outs, 1), full, TOL64)


@pytest.mark.parametrize("side", ["left", "right"])
def test_padding_equals_unpadded_in_the_hybrid(side):
    model = tiny()
    ids = torch.randint(0, 256, (2, 16))
    mask = torch.ones(2, 16, dtype=torch.long)
    if side == "left":
        mask[0, :7] = 0
        valid = slice(7, 16)
    else:
        mask[0, 9:] = 0
        valid = slice(0, 9)
    out = model(ids, attention_mask=mask)
    assert_close("padded", out[0, valid], model(ids[:1, valid])[0], TOL64)
    assert_close("full row", out[1], model(ids[1:])[0], TOL64)
    # the padded positions hold finite values too, so a loss over the valid ones trains: finite gradients
    assert torch.isfinite(out).all()
    (out[0, valid].sum() + out[1].sum()).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_rope_rotates_each_pair_by_its_position():
    """The attention's rotary embedding is a rotation (it keeps every norm), and a query-key score depends
    only on the distance of their positions."""
    from gdn2.model import _rope

    q, k = torch.randn(2, 1, 1, 16, dtype=torch.float64).unbind(0)
    pos = lambda p: torch.tensor([[p]])
    assert torch.allclose(_rope(q, pos(5)).norm(), q.norm(), rtol=1e-6)
    score = lambda m, n: (_rope(q, pos(m)) * _rope(k, pos(n))).sum()
    assert torch.allclose(score(7, 3), score(11, 7), rtol=1e-5)
    assert torch.allclose(score(3, 3), (q * k).sum(), rtol=1e-5)
    assert not torch.allclose(score(7, 3), score(3, 7), rtol=1e-3)


@pytest.mark.parametrize("block", [1024, 4], ids=["one-query-block", "query-blocks-of-4"])
@pytest.mark.parametrize("lengths", [(7, 1, 12, 6), (0, 9, 0, 17, 0)],
                         ids=["window-inside-documents", "empty-documents"])
def test_packed_documents_equal_each_document_alone(lengths, block, monkeypatch):
    """One row packing documents (cu_seqlens): every document's logits are those of the document alone,
    through the GDN2 layers and the sliding-window attention (window 5, shorter than some documents);
    the packed loss predicts no token across documents and equals the loss of the documents alone (the
    loss is float32 by design, so within float32's bound). The attention's queries in one block, or in blocks
    of 4 each against the keys of its window (5)."""
    monkeypatch.setattr(gdn2.model, "PACKED_QUERY_BLOCK", block)
    model = tiny()
    docs = [torch.randint(0, 256, (1, n)) for n in lengths]
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()])
    packed = model(torch.cat(docs, 1), cu_seqlens=cu)
    for n, doc in enumerate(docs):
        if doc.shape[1]:
            assert_close(f"document {n}", packed[:, cu[n]:cu[n + 1]], model(doc), TOL64)
    loss = model.loss(torch.cat(docs, 1), cu_seqlens=cu.int())
    scored = [d for d in docs if d.shape[1] > 1]
    nll = [torch.nn.functional.cross_entropy(model(d)[0, :-1], d[0, 1:], reduction="sum") for d in scored]
    expected = sum(nll) / sum(d.shape[1] - 1 for d in scored)
    assert_close("packed loss", loss, expected, TOLERANCES["reference-float32"][0])
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_packed_documents_bad_arguments():
    model = tiny()
    ids = torch.randint(0, 256, (1, 10))
    cu = torch.tensor([0, 4, 10])
    for kwargs, match in (
        (dict(input_ids=ids.expand(2, 10), cu_seqlens=cu), "B = 1"),
        (dict(input_ids=ids, cu_seqlens=cu, attention_mask=torch.ones(1, 10)), "attention_mask"),
        (dict(input_ids=ids, cu_seqlens=cu, cache=Cache()), "cache"),
        (dict(input_ids=ids, cu_seqlens=torch.tensor([0, 6, 4, 10])), "non-decreasing from 0 to T = 10"),
        (dict(input_ids=ids, cu_seqlens=torch.tensor([0, 4, 11])), "non-decreasing from 0 to T = 10"),
        (dict(input_ids=ids, cu_seqlens=torch.tensor(3)), "cu_seqlens must have rank 1"),
        (dict(input_ids=ids, cu_seqlens=torch.tensor([0])), "N\\+1 >= 2 offsets"),
    ):
        with pytest.raises(ValueError, match=match):
            model(**kwargs)
    with pytest.raises(TypeError, match="int32 or int64"):
        model(ids, cu_seqlens=cu.float())
    with pytest.raises(ValueError, match="nothing to predict"):
        model.loss(ids[:, :2], cu_seqlens=torch.tensor([0, 1, 2]))


def test_left_padded_generation_equals_each_prompt_alone():
    model = tiny().eval()
    ids = torch.randint(0, 256, (2, 12))
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[0, :5] = 0
    new = torch.randint(0, 256, (2, 8))
    cache = Cache()
    model(ids, attention_mask=mask, cache=cache, use_cache=True)
    full_mask = torch.cat([mask, torch.ones(2, 8, dtype=torch.long)], 1)
    steps = torch.cat([model(new[:, t:t + 1], attention_mask=full_mask[:, :13 + t], cache=cache, use_cache=True)
                       for t in range(8)], 1)
    alone = model(torch.cat([ids[:1, 5:], new[:1]], 1))[0, 7:]
    assert_close("row 0", steps[0], alone, TOL64)


def test_generate_uses_constant_memory():
    """GDN2 states and conv tails do not grow; the sliding-window cache grows only up to its window."""
    window = 5
    model = tiny(dtype=torch.float32, swa_window=window).eval()
    prompt = torch.randint(0, 256, (2, 3))
    cache = Cache()
    model(prompt, cache=cache, use_cache=True)
    sizes = [cache.num_bytes()]
    for _ in range(3 * window):
        model(torch.randint(0, 256, (2, 1)), cache=cache, use_cache=True)
        sizes.append(cache.num_bytes())
    swa = [s for s in cache.layers.values() if isinstance(s, WindowState)]
    assert len(swa) == 1 and swa[0].k.shape[2] == window - 1
    assert sizes[window:] == [sizes[-1]] * len(sizes[window:])          # flat once the window is full
    assert sizes[0] <= sizes[-1]
    # generate() itself: the same bound for a long run, and the output shape
    cache = Cache()
    out = model.generate(prompt, 40, temperature=0, cache=cache)
    assert out.shape == (2, 43) and torch.equal(out[:, :3], prompt)
    assert cache.num_bytes() == sizes[-1]


def test_greedy_generate_matches_argmax_of_full_forward():
    model = tiny().eval()
    prompt = torch.randint(0, 256, (1, 6))
    out = model.generate(prompt, 10, temperature=0.0)
    logits = model(out[:, :-1])
    assert torch.equal(logits[:, 5:].argmax(-1), out[:, 6:])


def test_loss_drops_on_the_embedded_text():
    """A few AdamW steps on Persuasion: the held-out loss falls well below ln 256 = 5.55 nats."""
    torch.manual_seed(0)
    model = tiny(dtype=torch.float32, swa_layers=(), num_layers=2, hidden_size=64, head_dim=16)
    data = corpus_tensor()
    assert 100_000 < data.numel() < 600_000 and data.max() < 128          # ASCII, a few hundred KB
    gen = torch.Generator().manual_seed(0)
    val = [_batches(data[-20_000:], 8, 64, gen) for _ in range(2)]
    before = evaluate(model, val)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(30):
        loss = model.loss(_batches(data[:-20_000], 8, 64, gen))
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = evaluate(model, val)
    assert before > 5.0 and after < before - 1.5, (before, after)


def test_train_function_reports_a_drop_and_a_sample():
    lines = []
    _, summary = train(GDN2LMConfig(hidden_size=32, num_heads=2, head_dim=8, backend="reference"),
                       TrainConfig(steps=12, batch_size=4, seq_len=32, warmup=2, eval_every=6, eval_batches=1,
                                   sample_tokens=10), progress=False, log=lines.append)
    assert summary["final_val_loss"] < summary["initial_val_loss"]
    assert [s for s, _ in summary["history"]] == [0, 6, 12]
    assert summary["sample"].startswith("Anne Elliot") and len(summary["sample"].encode()) >= 11
    assert any("val loss" in line for line in lines)


@pytest.mark.parametrize(
    "kw,error,match",
    [
        pytest.param({"num_layers": 0}, ValueError, "num_layers", id="num_layers-0"),
        pytest.param({"swa_layers": (5,)}, ValueError, "swa_layers", id="swa-index-out-of-range"),
        pytest.param({"swa_layers": (0,), "swa_heads": 3}, ValueError, "swa_heads", id="swa-heads-rope"),
        pytest.param({"swa_window": 0}, ValueError, "swa_window", id="swa_window-0"),
        pytest.param({"backend": "nope"}, ValueError, "reference", id="backend-unknown"),
        pytest.param({"recompute": "always"}, ValueError, "recompute", id="recompute-unknown"),
        pytest.param({"gradient_checkpointing": 1}, TypeError, "gradient_checkpointing", id="checkpointing-not-bool"),
    ],
)
def test_bad_config(kw, error, match):
    with pytest.raises(error, match=match):
        GDN2LM(GDN2LMConfig(hidden_size=32, num_heads=2, head_dim=8, **kw))


def test_config_recompute_reaches_every_gdn2_layer():
    model = GDN2LM(GDN2LMConfig(hidden_size=32, num_heads=2, head_dim=8, num_layers=3, swa_layers=(1,),
                                swa_heads=2, recompute=False))
    assert [getattr(b.mixer, "recompute", "attention") for b in model.blocks] == [False, "attention", False]


@pytest.mark.parametrize("packed", [False, True], ids=["batch", "packed-documents"])
def test_gradient_checkpointing_keeps_less_and_changes_no_gradient(packed):
    """With ``gradient_checkpointing`` each block keeps only its input and reruns its forward in the
    backward: the same loss and the same gradient of every parameter, bit for bit, for a fraction of the
    saved activations; in eval mode, without gradients or with a cache it does not checkpoint."""
    ids = torch.randint(0, 256, (1, 40) if packed else (3, 21))
    cu = torch.tensor([0, 9, 10, 27, 40]) if packed else None
    runs = {}
    for ckpt in (False, True):
        model = tiny(seed=1, gradient_checkpointing=ckpt)
        loss, saved = saved_bytes(lambda m=model: m.loss(ids, cu_seqlens=cu))
        loss.backward()
        runs[ckpt] = loss, {n: p.grad for n, p in model.named_parameters()}, saved
    (loss0, grads0, saved0), (loss1, grads1, saved1) = runs[False], runs[True]
    assert torch.equal(loss0, loss1)
    for name, g in grads0.items():
        assert torch.equal(g, grads1[name]), name
    assert saved1 < saved0 / 3, (saved1, saved0)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(ids, cu_seqlens=cu), tiny(seed=1).eval()(ids, cu_seqlens=cu))
    _, saved_eval = saved_bytes(lambda: model(ids, cu_seqlens=cu))
    assert saved_eval == saved_bytes(lambda: tiny(seed=1).eval()(ids, cu_seqlens=cu))[1]
    model.train()
    _, saved_with_cache = saved_bytes(lambda: model(ids[:1, :5], cache=Cache(), use_cache=True))
    _, saved_plain = saved_bytes(lambda: tiny(seed=1)(ids[:1, :5], cache=Cache(), use_cache=True))
    assert saved_with_cache == saved_plain


def test_bad_generate_and_input_arguments():
    model = tiny()
    with pytest.raises(ValueError, match="input_ids"):
        model(torch.tensor([[1, 256]]))
    with pytest.raises(ValueError, match="max_new_tokens"):
        model.generate(torch.tensor([[1]]), -1)
    with pytest.raises(ValueError, match="temperature"):
        model.generate(torch.tensor([[1]]), 2, temperature=-1.0)


def test_attention_without_mask_takes_the_causal_path_with_the_same_result():
    """Within its window and without padding or a cache, the attention layer runs plain causal SDPA; an
    all-ones mask takes the masked path: both give the same output."""
    from gdn2.model import SlidingWindowAttention

    torch.manual_seed(0)
    attn = SlidingWindowAttention(32, 4, window=16).double()
    x = torch.randn(2, 12, 32, dtype=torch.float64)
    fast = attn(x)
    masked = attn(x, attention_mask=torch.ones(2, 12))
    assert torch.allclose(fast, masked, atol=1e-12)


def test_cuda_graph_decoding_needs_cuda_and_no_attention_layers():
    lm = GDN2LM(GDN2LMConfig(num_layers=2, swa_layers=(1,)))
    with pytest.raises(ValueError, match="cuda_graph=True needs CUDA input ids"):
        lm.generate(torch.tensor([list(b"Anne")]), 2, cuda_graph=True)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_cuda_graph_decoding_equals_eager():
    """Greedy decoding of a GDN2 model replayed from a CUDA graph gives the eager tokens."""
    torch.manual_seed(0)
    lm = GDN2LM(GDN2LMConfig(num_layers=3, hidden_size=256, num_heads=2, head_dim=128, backend="triton")).cuda()
    prompt = torch.randint(0, 256, (4, 17), device="cuda")
    eager = lm.generate(prompt, 24, temperature=0)
    graphed = lm.generate(prompt, 24, temperature=0, cuda_graph=True)
    assert torch.equal(eager, graphed)
