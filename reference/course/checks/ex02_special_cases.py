"""Exercise 2: tied gates recover KDA and Gated DeltaNet; without the erase (b = 0) the output has a
masked-attention form.

    KDA:            b_t = β_t·1_K,  w_t = β_t·1_V
    Gated DeltaNet: as KDA, and g_t = log(α_t)·1_K (one decay per head)
    b = 0:          o_t = Σ_{s≤t} (scale Σ_d q_td k_sd exp(G_td − G_sd)) (w_s⊙v_s),  G_t = Σ_{i≤t} g_i

The model recurrences are written here in their own papers' form, independently of GDN-2, and
``gdn2.ops.recurrent_gdn2`` (float64) runs with the student's gates.
"""

import torch

from gdn2.ops import recurrent_gdn2
from gdn2.tolerances import TOLERANCES

from ..framework import Case, Diagnosis, Exercise, Mistake, Out, Property, Run

TOL = TOLERANCES["reference-float64"][0]


def _sizes(case: Case) -> tuple[int, ...]:
    B, T, H = case.size("B", 1, 2), case.size("T", 1, 12), case.size("H", 1, 3)
    K = case.size("K", 2, 8)
    return B, T, H, K, case.size("V", 2, 8, avoid=(K,))


def kda(q, k, v, g, beta, scale):
    """KDA: S̄ = Diag(exp g) S, S = S̄ + β k (v − S̄ᵀk)ᵀ, o = Sᵀ(scale·q); [B, T, H, ·], H = HV."""
    B, T, H, K = q.shape
    S, outs = q.new_zeros(B, H, K, v.shape[-1]), []
    for t in range(T):
        S = torch.exp(g[:, t])[..., None] * S
        delta = beta[:, t, :, None] * (v[:, t] - torch.einsum("bhkv,bhk->bhv", S, k[:, t]))
        S = S + k[:, t, ..., None] * delta[..., None, :]
        outs.append(torch.einsum("bhkv,bhk->bhv", S, scale * q[:, t]))
    return torch.stack(outs, dim=1)


def gated_deltanet(q, k, v, alpha, beta, scale):
    """Gated DeltaNet: S = α (I − β k kᵀ) S + β k vᵀ, o = Sᵀ(scale·q), one α per head and token."""
    B, T, H, K = q.shape
    S, outs = q.new_zeros(B, H, K, v.shape[-1]), []
    for t in range(T):
        kt, bt, at = k[:, t], beta[:, t, :, None, None], alpha[:, t, :, None, None]
        erase = torch.eye(K, dtype=q.dtype) - bt * kt[..., :, None] * kt[..., None, :]
        S = at * (erase @ S) + bt * kt[..., :, None] * v[:, t, :, None, :]
        outs.append(torch.einsum("bhkv,bhk->bhv", S, scale * q[:, t]))
    return torch.stack(outs, dim=1)


def _expand(x, n):
    return x[..., None].expand(*x.shape, n)


# ---- KDA ------------------------------------------------------------------------------------------
GATE_OUTS = (Out("b", "B T H K"), Out("w", "B T H V"))
KDA_MISTAKES = (
    Mistake("write-gate-missing", "Your w is 1: KDA writes β_t v_t, so its write gate is β too (w = β·1_V).",
            lambda beta, K, V: (_expand(beta, K), torch.ones_like(_expand(beta, V)))),
    Mistake("gates-on-wrong-axis", "Your b has V entries and w has K: b is the erase gate on the key axis "
            "[B, T, H, K], w the write gate on the value axis [B, T, H, V].",
            lambda beta, K, V: (_expand(beta, V), _expand(beta, K))),
)


def check_kda(run: Run) -> None:
    for case in run.cases(3):
        B, T, H, K, V = _sizes(case)
        q, k, v = case.normal(B, T, H, K), case.unit(B, T, H, K), case.normal(B, T, H, V)
        g, beta = case.log_decay(-1.0, B, T, H, K), case.gate("beta", 1.0, B, T, H)
        got = case.call("kda_gates", beta, K, V)
        case.expect(got, (_expand(beta, K), _expand(beta, V)), GATE_OUTS, TOL, what="kda_gates",
                    mistakes=KDA_MISTAKES, args=(beta, K, V))
        b, w = got
        o, _ = recurrent_gdn2(q, k, v, g, b, w, K ** -0.5)
        case.expect(o, kda(q, k, v, g, beta, K ** -0.5), (Out("o", "B T H V"),), TOL,
                    what="recurrent_gdn2 with your gates")


# ---- Gated DeltaNet -------------------------------------------------------------------------------
GDN_MISTAKES = (
    Mistake("alpha-not-log", "Your g is α itself: g is the log-decay (α = exp g ≤ 1, so g ≤ 0): "
            "g = log(α)·1_K.", lambda alpha, beta, K, V: (_expand(alpha, K), _expand(beta, K), _expand(beta, V))),
    Mistake("write-gate-missing", "Your w is 1: Gated DeltaNet writes β_t v_t (w = β·1_V).",
            lambda alpha, beta, K, V: (_expand(alpha.log(), K), _expand(beta, K), torch.ones_like(_expand(beta, V)))),
)


def check_gated_deltanet(run: Run) -> None:
    for case in run.cases(3):
        B, T, H, K, V = _sizes(case)
        q, k, v = case.normal(B, T, H, K), case.unit(B, T, H, K), case.normal(B, T, H, V)
        alpha, beta = case.uniform(0.05, 1.0, B, T, H), case.gate("beta", 1.0, B, T, H)
        case.note("alpha in [0.05, 1]")
        got = case.call("gated_deltanet_gates", alpha, beta, K, V)
        expected = (_expand(alpha.log(), K), _expand(beta, K), _expand(beta, V))
        case.expect(got, expected, (Out("g", "B T H K"), *GATE_OUTS), TOL, what="gated_deltanet_gates",
                    mistakes=GDN_MISTAKES, args=(alpha, beta, K, V))
        o, _ = recurrent_gdn2(q, k, v, *got, K ** -0.5)
        case.expect(o, gated_deltanet(q, k, v, alpha, beta, K ** -0.5), (Out("o", "B T H V"),), TOL,
                    what="recurrent_gdn2 with your gates")


# ---- b = 0: masked attention ----------------------------------------------------------------------
def _erase_free(q, k, v, g, w, scale, *, strict=False, own_decay=False, gated=True):
    """o_t = Σ_{s≤t} scale Σ_d q_td k_sd exp(G_td − G_sd) z_s, with the mistakes as switches."""
    G = g.cumsum(1)
    G_s = G - g if own_decay else G                                    # own_decay: exp(G_t − G_{s−1})
    T = q.shape[1]
    mask = torch.ones(T, T, dtype=torch.bool).tril(-1 if strict else 0)[:, :, None, None]
    diff = torch.where(mask, G[:, :, None] - G_s[:, None, :], float("-inf"))   # [B, T, T, H, K]
    scores = scale * torch.einsum("brhd,bshd,brshd->brsh", q, k, torch.exp(diff))
    return torch.einsum("brsh,bshv->brhv", scores, w * v if gated else v)


ERASE_FREE_MISTAKES = (
    Mistake("causal-mask-off-by-one", "Your sum stops before s = t: the token's own write is in the state "
            "that o_t reads (S_t, after the write), so the causal mask includes the diagonal (s ≤ t).",
            lambda *a: _erase_free(*a, strict=True)),
    Mistake("decay-off-by-one", "Your weights decay token s's write by its own g_s too (exp(G_t − G_{s−1})). "
            "The state is decayed before the write, so the write of token s decays by g_{s+1}, …, g_t: "
            "exp(G_t − G_s).", lambda *a: _erase_free(*a, own_decay=True)),
    Mistake("write-gate-missing", "Your sum uses v_s: with b = 0 the state accumulates the gated value "
            "z_s = w_s⊙v_s.", lambda *a: _erase_free(*a, gated=False)),
)


def check_erase_free(run: Run) -> None:
    for case in run.cases(4):
        B, T, H, K, V = _sizes(case)
        q, k, v = case.normal(B, T, H, K), case.unit(B, T, H, K), case.normal(B, T, H, V)
        g = case.log_decay(-1.0 if case.index < 2 else -20.0, B, T, H, K)
        w = case.gate("w", 1.0, B, T, H, V)
        args = (q, k, v, g, w, K ** -0.5)
        got = case.call("erase_free_output", *args)
        expected, _ = recurrent_gdn2(q, k, v, g, torch.zeros_like(g), w, K ** -0.5)
        case.expect(got, expected, (Out("o", "B T H V"),), TOL, what="erase_free_output",
                    mistakes=ERASE_FREE_MISTAKES, args=args)


EXERCISE = Exercise(
    number=2,
    slug="ex02_special_cases",
    title="Special cases: KDA, Gated DeltaNet, b = 0",
    functions=("kda_gates", "gated_deltanet_gates", "erase_free_output"),
    properties=(
        Property("KDA is GDN-2 with b = w = β·1", check_kda,
                 Diagnosis("kda", "Tied gates repeat one scalar β_t per head and token along an axis: "
                                  "β[..., None].expand(...) to K for b and to V for w.")),
        Property("Gated DeltaNet is KDA with one decay per head", check_gated_deltanet,
                 Diagnosis("gated-deltanet", "g is the log of the decay, repeated along the key axis.")),
        Property("b = 0: the output is masked attention", check_erase_free,
                 Diagnosis("erase-free", "Without the erase the state is Σ_s Diag(exp(G_t − G_s)) k_s z_sᵀ: "
                                         "o_t = Σ_{s≤t} (scale·q_t)ᵀ Diag(exp(G_t − G_s)) k_s z_s. Mask the "
                                         "exponent (−inf for s > t) before exp.")),
    ),
    minutes=40,
    difficulty=1,
)
