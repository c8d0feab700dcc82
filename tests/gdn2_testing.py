"""Shared test helpers: the tolerance table, one comparison helper, input factories."""

import pytest
import torch
from torch import Tensor

from gdn2.tolerances import KIND, TOLERANCES, gate_term_sizes  # noqa: F401  (defined once in the package)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

#: marks a test that needs a CUDA GPU (the Triton tests at realistic shapes)
gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
#: short dtype ids of the test matrix, and each dtype's row of the tolerance table for Triton
DT = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
PATH = {dtype: f"triton-{str(dtype).removeprefix('torch.')}" for dtype in DT.values()}


def rel_rms(actual: Tensor, expected: Tensor, scale: Tensor | None = None) -> float:
    """RMS(actual − expected) / RMS(scale); the scale is expected itself unless given."""
    if actual.numel() == 0:
        return 0.0
    a, e = actual.double(), expected.double()
    s = e if scale is None else scale.double()
    return ((a - e).pow(2).mean().sqrt() / s.pow(2).mean().sqrt().clamp_min(1e-30)).item()


def assert_close(name: str, actual: Tensor, expected: Tensor, tol: float, scale: Tensor | None = None) -> None:
    """Fail unless actual is finite, has expected's shape, and rel_rms(actual, expected, scale) <= tol.

    ``scale`` is for a gradient that sums many signed terms (dA_log, ddt_bias): Σ|term|
    (``gdn2.tolerances.gate_term_sizes``), since a sum that cancels keeps no relative accuracy."""
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert torch.isfinite(actual).all(), f"{name}: non-finite values ({(~torch.isfinite(actual)).sum()} of them)"
    err = rel_rms(actual, expected, scale)
    max_abs = (actual.double() - expected.double()).abs().max().item() if actual.numel() else 0.0
    what = "rel-RMS" if scale is None else "RMS error / RMS Σ|term|"
    assert err <= tol, f"{name}: {what} {err:.3e} > tol {tol:.1e} (max-abs {max_abs:.3e})"


def assert_all_close(results: dict[str, Tensor], expected: dict[str, Tensor], path: str) -> None:
    """Compare every named quantity with its tolerance for ``path`` (e.g. "triton-bfloat16")."""
    tols = TOLERANCES[path]
    for name, exp in expected.items():
        assert_close(name, results[name], exp, tols[KIND[name]])


class GateTerms:
    """Records a GDN2 layer's gate logits (its ``f_proj`` output) and their gradient, for judging dA_log and
    ddt_bias against the size of their terms (:func:`gdn2.tolerances.gate_term_sizes`): they sum signed terms
    over tokens, which can cancel. Use as a context manager around the layer's forward and backward;
    ``sizes()`` then maps "A_log" and "dt_bias" to their scales (for ``assert_close``)."""

    def __init__(self, layer) -> None:
        self.layer, self.g, self.dg = layer, None, None

    def _keep(self, module, inputs, out) -> None:
        self.g = out.detach()
        out.register_hook(lambda grad: setattr(self, "dg", grad))

    def __enter__(self) -> "GateTerms":
        self._handle = self.layer.f_proj.register_forward_hook(self._keep)
        return self

    def __exit__(self, *exc) -> None:
        self._handle.remove()

    def sizes(self) -> dict[str, Tensor]:
        assert self.g is not None and self.dg is not None, "the layer ran no forward and backward in the block"
        H, K = self.layer.num_heads, self.layer.head_dim
        return gate_term_sizes(self.g.reshape(-1, 1, H, K), self.layer.A_log.detach(), self.layer.dt_bias.detach(),
                               self.dg.reshape(-1, 1, H, K))


def make_inputs(
    B: int, T: int, H: int, HV: int, K: int, V: int, *, dtype=torch.float64, device=DEVICE,
    initial_state: bool = True, N: int | None = None, g_min: float = -2.0, b_max: float = 2.0,
    seed: int | None = None,
) -> dict[str, Tensor]:
    """Random operator inputs (never zeros): unit-norm keys, g in [g_min, 0), b in [0, b_max].

    The log-decay has a rate per head and key channel, as a trained gate does: g = g_min·ρ·u with u
    uniform in (0, 1] per token and ρ = 1 for half the channels, log-uniform in [e^-8, 1] for the
    others. The first half forget within a few tokens (all of them with a strong g_min); some of the
    others keep the state across chunks (γ of a 64-token chunk near 1), so a kernel that carries the state
    from chunk to chunk wrongly fails. With ρ = 1 everywhere every channel's γ of a chunk would be about
    e^(32·g_min), and the carried state would be lost to rounding.

    Without ``seed`` they are drawn from torch's generator, which tests/conftest.py seeds per test."""
    gen = torch.Generator(device="cpu")
    gen.manual_seed(int(torch.randint(2**62, ())) if seed is None else seed)
    r = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float64)
    u = lambda *s: torch.rand(*s, generator=gen, dtype=torch.float64)
    k = torch.nn.functional.normalize(r(B, T, H, K), dim=-1)
    rate = torch.exp(-16 * (u(H, K) - 0.5).clamp_min(0))
    out = {
        "q": r(B, T, H, K), "k": k, "v": r(B, T, HV, V),
        "g": g_min * rate * (1 - u(B, T, H, K)), "b": b_max * u(B, T, H, K), "w": u(B, T, HV, V),
    }
    out = {n: x.to(device=device, dtype=dtype if n in "qkv" else (torch.float32 if dtype != torch.float64 else dtype))
           for n, x in out.items()}
    if initial_state:
        out["initial_state"] = r(N or B, HV, K, V).to(device=device, dtype=torch.float32 if dtype != torch.float64
                                                       else torch.float64)
    return out


def gate_parameters(H: int, K: int, generator: torch.Generator | None = None,
                    device=DEVICE) -> tuple[Tensor, Tensor]:
    """The in-op gate's float32 ``A_log`` [H] and ``dt_bias`` [H·K]: exp(A_log) in [1, 16] as the layer
    initialises it, dt_bias spread over [−20, 24], so that x = g_raw + dt_bias meets every regime of
    softplus (e^x far below 0, where log(1 + e^x) rounds away; log(1 + e^x); x above 20) and the
    channels range from almost no decay to strong decay."""
    A_log = torch.log(1 + 15 * torch.rand(H, generator=generator, dtype=torch.float64))
    dt_bias = -20 + 44 * torch.rand(H * K, generator=generator, dtype=torch.float64)
    return A_log.float().to(device), dt_bias.float().to(device)


def saved_bytes(fn):
    """``(fn(), bytes)``: the bytes of the tensors autograd keeps for the backward while ``fn`` runs.
    Tensors kept under an activation checkpoint are dropped by it and not counted."""
    total = 0

    def pack(t: Tensor) -> Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, total


def poison(x: Tensor) -> Tensor:
    """Fill with NaN (integers with a huge value) so an unwritten element fails loudly."""
    return x.fill_(float("nan")) if x.is_floating_point() else x.fill_(2**30)
