"""The retrieval evaluation (examples/evaluation/): well-formed tasks, matched models, the ablations'
reductions, and the committed CPU results reproduced by a slice of their own config."""

import csv
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gdn2 import GDN2
from gdn2.ops import recurrent_gdn2

ROOT = Path(__file__).resolve().parents[1]
EVAL = ROOT / "examples" / "evaluation"
sys.path.insert(0, str(EVAL))

import decode_latency  # noqa: E402
import run  # noqa: E402
from models import GATE_MODES, LINEAR_MIXERS, MIXERS, GateModeGDN2, build_model, state_floats, swa_window  # noqa: E402
from tasks import IGNORE, NEEDLE, QUERY, TaskSpec, make_batch, mqar_layout, niah_layout  # noqa: E402

CPU = run.load_config(EVAL / "configs" / "cpu.json")
RESULTS = EVAL / "results"


def _rows(name: str) -> list[dict]:
    with (RESULTS / name).open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


# ---- tasks -------------------------------------------------------------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(pairs=st.integers(1, 8), extra=st.integers(0, 20), vocab=st.integers(16, 40), seed=st.integers(0, 2**31))
def test_mqar_is_well_formed(pairs, extra, vocab, seed):
    spec = TaskSpec("mqar", pairs, 4 * pairs - 1 + extra, vocab)
    x, y = make_batch(spec, 16, torch.Generator().manual_seed(seed))
    keys, values = mqar_layout(spec)
    assert x.shape == y.shape == (16, spec.seq_len)
    for row, tgt in zip(x.tolist(), y.tolist()):
        k, v = row[0:2 * pairs:2], row[1:2 * pairs:2]
        assert len(set(k)) == pairs and len(set(v)) == pairs, "keys and values of a sequence are distinct"
        assert all(t in keys for t in k) and all(t in values for t in v)
        answer = dict(zip(k, v))
        queries = [p for p, t in enumerate(tgt) if t != IGNORE]
        assert sorted(row[p] for p in queries) == sorted(k), "every key is queried exactly once"
        for p in queries:
            assert p >= 2 * pairs and tgt[p] == answer[row[p]], "the answer is the value paired with the key"
            if p + 1 < spec.seq_len:
                assert row[p + 1] == tgt[p], "the value follows its query (teacher forcing)"
        fillers = [t for p, t in enumerate(row) if p >= 2 * pairs and p not in queries and p - 1 not in queries]
        assert not set(fillers) & set(k), "a filler is never one of the sequence's keys"


@settings(max_examples=25, deadline=None)
@given(pairs=st.integers(1, 6), queries=st.integers(1, 6), extra=st.integers(0, 40), vocab=st.integers(24, 60),
       seed=st.integers(0, 2**31))
def test_niah_is_well_formed(pairs, queries, extra, vocab, seed):
    queries = min(queries, pairs)
    spec = TaskSpec("niah", pairs, 3 * pairs + 3 * queries - 1 + extra, vocab, num_queries=queries)
    keys, values, fillers = niah_layout(spec)
    x, y = make_batch(spec, 16, torch.Generator().manual_seed(seed))
    for row, tgt in zip(x.tolist(), y.tolist()):
        hay = spec.seq_len + 1 - 3 * queries
        needles = [p for p in range(hay) if row[p] == NEEDLE]
        assert len(needles) == pairs and all(b - a >= 3 for a, b in zip(needles, needles[1:]))
        k, v = [row[p + 1] for p in needles], [row[p + 2] for p in needles]
        assert len(set(k)) == pairs and len(set(v)) == pairs, "needles and distractors have distinct keys and values"
        assert all(t in keys for t in k) and all(t in values for t in v)
        assert all(t in fillers for p, t in enumerate(row[:hay]) if not any(0 <= p - n <= 2 for n in needles))
        asked = [p for p, t in enumerate(tgt) if t != IGNORE]
        assert len(asked) == queries and len({row[p] for p in asked}) == queries
        for p in asked:
            assert row[p - 1] == QUERY and row[p] in k and tgt[p] == v[k.index(row[p])]


def test_the_needle_is_anywhere():
    """The asked needle's place is uniform over the haystack: every tenth of it holds about a tenth."""
    spec = TaskSpec("niah", 3, 64, 48, num_queries=1)
    x, y = make_batch(spec, 4000, torch.Generator().manual_seed(0))
    hay = spec.seq_len + 1 - 3
    key = x.gather(1, (y != IGNORE).long().argmax(1, keepdim=True))           # the asked key
    place = ((x[:, :hay] == key) & (torch.roll(x, 1, 1)[:, :hay] == NEEDLE)).long().argmax(1) - 1
    counts = torch.bincount(place * 10 // (hay - 2), minlength=10)
    assert place.min() == 0 and place.max() == hay - 3, "the first and the last place are both reached"
    assert (counts > 0.7 * 400).all() and (counts < 1.3 * 400).all(), counts.tolist()


def test_tasks_are_seeded():
    spec = TaskSpec("mqar", 4, 32, 16)
    a = make_batch(spec, 8, torch.Generator().manual_seed(3))
    b = make_batch(spec, 8, torch.Generator().manual_seed(3))
    c = make_batch(spec, 8, torch.Generator().manual_seed(4))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and not torch.equal(a[0], c[0])


# ---- models: the matching rules of the config ----------------------------------------------------------------
def test_parameters_and_state_match_the_rules():
    m = CPU["model"]
    H, K, D = m["num_heads"], m["head_dim"], m["hidden_size"]
    window = swa_window(m)
    heads, d = m["num_heads"], D // m["num_heads"]
    assert window * heads * 2 * d <= H * K * K < (window + 1) * heads * 2 * d, "the largest window within the state"
    committed = {(r["mixer"], int(r["vocab_size"])): r for r in _rows("cpu-models.csv")}
    for spec in run.cells(CPU):
        counts = {}
        for mixer in MIXERS:
            with torch.device("meta"):
                model = build_model(mixer, m, spec.vocab_size, spec.seq_len, backend="reference")
            counts[mixer] = sum(p.numel() for p in model.parameters())
            assert counts[mixer] == int(committed[mixer, spec.vocab_size]["params"])
            floats = state_floats(mixer, m, spec.seq_len)
            if mixer in LINEAR_MIXERS:
                assert floats == H * K * K
            elif mixer == "swa":
                assert floats == min(window, spec.seq_len) * heads * 2 * d <= H * K * K
        ref = counts[m["param_match"]["reference"]]
        assert all(abs(c - ref) <= m["param_match"]["tolerance"] * ref for c in counts.values()), counts


@pytest.mark.parametrize("mode", GATE_MODES)
def test_recurrent_state_is_the_configured_size(mode):
    m = CPU["model"]
    layer = GateModeGDN2(m["hidden_size"], m["num_heads"], m["head_dim"], mode, chunk_size=4)
    args, kwargs = layer.operator_inputs(torch.randn(2, 9, m["hidden_size"]))
    _, state = recurrent_gdn2(*args, **kwargs, output_final_state=True)
    assert state[0].numel() == state_floats(mode, m, 9)


# ---- the ablations reduce correctly --------------------------------------------------------------------------
D, H, K = 32, 2, 16


def _pair(mode: str) -> tuple[GateModeGDN2, GDN2]:
    """The mode's layer in float64 and a GDN2 layer holding its shared weights."""
    torch.manual_seed(0)
    mixer = GateModeGDN2(D, H, K, mode, chunk_size=4).double()
    ref = GDN2(D, H, K).double()
    shared = {k: v for k, v in mixer.state_dict().items() if k in ref.state_dict()
              and v.shape == ref.state_dict()[k].shape}
    ref.load_state_dict(shared, strict=False)
    return mixer, ref


def test_gdn2_mode_is_the_layer():
    mixer, ref = _pair("gdn2")
    assert set(mixer.state_dict()) == set(ref.state_dict())
    x = torch.randn(2, 13, D, dtype=torch.float64)
    torch.testing.assert_close(mixer(x), ref(x), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("mode", ["kda", "w_only", "gdn"])
def test_tied_modes_are_gdn2_with_tied_gates(mode):
    """KDA is GDN2 with b = w = β·1, w-only with b = β·1, Gated DeltaNet adds one decay per head: GDN2's own
    projections set to repeat β's (and the decay's) rows compute the same layer."""
    mixer, ref = _pair(mode)
    with torch.no_grad():
        beta = mixer.beta_proj.weight                                         # [H, D]
        ref.b_proj.weight.copy_(beta.repeat_interleave(K, 0))                 # b = σ(β)·1 over K
        if mode != "w_only":
            ref.w_proj.weight.copy_(beta.repeat_interleave(K, 0))             # w = b (V = K, HV = H)
        if mode == "gdn":                                                     # g_raw = a per head, over K
            ref.f_proj[0].weight.zero_()
            ref.f_proj[0].weight[:H].copy_(mixer.a_proj.weight)
            ref.f_proj[1].weight.copy_(torch.eye(K, dtype=torch.float64)[:H].repeat_interleave(K, 0))
            ref.dt_bias.copy_(mixer.dt_bias.repeat_interleave(K))
    x = torch.randn(2, 11, D, dtype=torch.float64)
    torch.testing.assert_close(mixer(x), ref(x), rtol=1e-9, atol=1e-11)


def test_b_only_writes_with_unit_gate():
    mixer, _ = _pair("b_only")
    x = torch.randn(2, 7, D, dtype=torch.float64)
    (q, k, v, g, b, w), kw = mixer.operator_inputs(x)
    assert not kw["use_gate_sigmoid_in_kernel"] and torch.equal(w, torch.ones_like(w))
    torch.testing.assert_close(b, torch.sigmoid(mixer.b_proj(x)).view_as(b))


@pytest.mark.parametrize("mode", GATE_MODES)
def test_each_mode_equals_the_recurrence(mode):
    """The chunked operator (chunk size 4, as the CPU config) equals recurrent_gdn2 token by token."""
    mixer, _ = _pair(mode)
    x = torch.randn(2, 10, D, dtype=torch.float64)
    torch.testing.assert_close(mixer(x), mixer(x, op=recurrent_gdn2), rtol=1e-9, atol=1e-11)


# ---- the committed results -------------------------------------------------------------------------------------
def test_committed_summary_is_the_runs_summarised():
    """cpu-grid.csv, cpu-contrasts.csv and cpu-tally.csv are what run.py computes from cpu-runs.csv, and the
    plots are drawn from them (nothing edited by hand)."""
    runs = _rows("cpu-runs.csv")
    grid, contrasts = run.summarise(CPU, runs)
    as_text = lambda rows: [{k: str(v) for k, v in r.items()} for r in rows]
    assert as_text(grid) == _rows("cpu-grid.csv")
    assert as_text(contrasts) == _rows("cpu-contrasts.csv")
    assert as_text(run.tally(CPU, contrasts)) == _rows("cpu-tally.csv")
    committed = [{k: (float(v) if k in ("test_acc", "ci_lo", "ci_hi") else v) for k, v in r.items()}
                 for r in _rows("cpu-grid.csv")]
    for name, svg in run.plots(CPU, committed).items():
        assert (RESULTS / name).read_text(encoding="utf-8") == svg, name
    assert len({r["seed"] for r in runs}) >= 3


def test_a_slice_of_the_cpu_config_reproduces_its_row():
    """One cell, one seed, GDN2 at its chosen rate: the same numbers as the committed run (exactly on a
    machine like the one that made them; within the seeds' spread elsewhere)."""
    cell = CPU["tuning"]["cell"]
    spec = next(s for s in run.cells(CPU) if run.cell_name(s) == cell)
    lr = float(next(r for r in _rows("cpu-grid.csv") if r["mixer"] == "gdn2" and r["cell"] == cell)["lr"])
    committed = [r for r in _rows("cpu-runs.csv")
                 if r["mixer"] == "gdn2" and r["cell"] == cell and float(r["lr"]) == lr]
    row = run.run_job(CPU, "gdn2", spec, 0, lr)
    old = next(r for r in committed if int(r["seed"]) == 0)
    for col in ("test_acc", "val_acc"):
        spread = max(float(r[col]) for r in committed) - min(float(r[col]) for r in committed)
        assert abs(row[col] - float(old[col])) <= spread + 1e-9, (col, row[col], old[col], spread)
    assert row["params"] == int(old["params"]) and row["state_floats"] == int(old["state_floats"])


def test_confidence_interval():
    mean, lo, hi, sd = run.t_interval([0.5, 0.6, 0.7])
    assert mean == pytest.approx(0.6) and sd == pytest.approx(0.1)
    assert hi - mean == pytest.approx(4.303 * 0.1 / 3**0.5)


# ---- the latency script's host logic ---------------------------------------------------------------------------
def test_decode_latency_dry_run(tmp_path):
    assert decode_latency.main(["--dry-run", "--out", str(tmp_path)]) == 0
    with (tmp_path / "decode-dry-run.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["model"] for r in rows} == {"gdn2", "transformer", "swa-8"}
    assert len(rows) == 3 * 2 * 2 and all(r["status"] == "ok" and float(r["ms_per_token"]) == float(r["ms_per_token"])
                                          for r in rows)
    gdn2_mib = {r["state_mib_per_seq"] for r in rows if r["model"] == "gdn2"}
    assert len(gdn2_mib) == 1, "GDN2's state does not grow with the context"
    kv = {int(r["context"]): float(r["state_mib_per_seq"]) for r in rows if r["model"] == "transformer"}
    assert kv[32] > kv[16], "the key-value cache grows with the context"
    with (tmp_path / "decode-dry-run-crossover.csv").open(newline="") as f:
        assert len(list(csv.DictReader(f))) == 2


def test_crossover_is_interpolated():
    rows = [{"model": m, "batch": 1, "context": c, "ms_per_token": t, "status": "ok"}
            for m, c, t in (("gdn2", 1024, 2.0), ("gdn2", 2048, 2.0), ("transformer", 1024, 1.0),
                            ("transformer", 2048, 3.0))]
    (row,) = decode_latency.crossovers(rows, "card")
    assert row["crossover_context"] == 1536
