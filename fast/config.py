"""Launch settings of every kernel: one frozen dataclass per kernel, so a misspelt field is a TypeError.

The drivers pick these by rule (``gdn2.fast.chunk_fwd.forward_config`` and its siblings); tests and
``benchmarks/`` pass their own to time or reproduce a launch. ``None`` in a field means "the rule's
choice for this call".
"""

from dataclasses import dataclass, fields

__all__ = ["Launch", "DiagLaunch", "OffDiagLaunch", "WYLaunch", "StateLaunch", "ForwardConfig",
           "StateBwdLaunch", "LocalWYLaunch", "PairwiseLaunch", "BackwardConfig", "DecodeLaunch", "NormLaunch",
           "ConvLaunch", "ConvStateLaunch", "ConvBwdLaunch", "ConvStateBwdLaunch", "ConvStepLaunch"]


def _pow2(x: int) -> bool:
    return x > 0 and x & (x - 1) == 0


@dataclass(frozen=True)
class Launch:
    """What every launch has: warps per program and software-pipelining stages."""

    num_warps: int = 4
    num_stages: int = 1

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if f.type is bool:
                if not isinstance(value, bool):
                    raise TypeError(f"{type(self).__name__}.{f.name} must be a bool, got {value!r}")
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{type(self).__name__}.{f.name} must be a positive int, got {value!r}")
            if (f.name.startswith("B") or f.name == "num_warps") and not _pow2(value):
                raise ValueError(f"{type(self).__name__}.{f.name} must be a power of two, got {value}")

    def meta(self) -> dict:
        """The fields as keyword arguments of a kernel launch."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class DiagLaunch(Launch):
    """``chunk_intra_diag_kernel``: key-tile width. One warp: the program waits on memory and on
    cross-warp scans, not on arithmetic. One stage: deeper pipelining computed wrong diagonal blocks
    with Triton 3.6 where the per-column fallback runs (benchmarks/triton_faults.py). PREFETCH loads the
    next key tile before this one's work, by hand (the in-op gate's store of g would otherwise make
    every tile wait for its loads)."""

    BK: int = 16
    num_warps: int = 1
    PREFETCH: bool = False


@dataclass(frozen=True)
class OffDiagLaunch(Launch):
    """``chunk_intra_offdiag_kernel``: key-tile width (None: min(32, K rounded up))."""

    BK: int | None = None
    num_warps: int = 1
    num_stages: int = 2


@dataclass(frozen=True)
class WYLaunch(Launch):
    """``chunk_wy_fwd_kernel``: key- and value-tile widths, NP programs per chunk sharing its tiles, and
    whether a key tile's five loads go out together before any of its work (LOADS_FIRST, the default: one
    wait on memory per tile instead of four, for more registers live at once) or each where it is first
    used (False: fewer tiles live at once, for a compiler that would spill them)."""

    BK: int | None = None
    BV: int | None = None
    NP: int = 1
    LOADS_FIRST: bool = True


@dataclass(frozen=True)
class StateLaunch(Launch):
    """``chunk_state_output_fwd_kernel``: value-column block BV and state-tile height BKH (None: the
    width rule of ``chunk_fwd._state_block_v`` and BKH = min(128, K rounded up)); pipeline stages (None:
    the rule of ``chunk_fwd._state_stages``)."""

    BV: int | None = None
    BKH: int | None = None
    num_warps: int | None = None
    num_stages: int | None = None


@dataclass(frozen=True)
class ForwardConfig:
    """The four launches of the chunk forward, and the product precision of float32 inputs (None:
    "ieee", exact float32 products)."""

    diag: DiagLaunch = DiagLaunch()
    offdiag: OffDiagLaunch = OffDiagLaunch()
    wy: WYLaunch = WYLaunch()
    state: StateLaunch = StateLaunch()
    precision: str | None = None

    def __post_init__(self) -> None:
        _check_precision(type(self).__name__, self.precision)


def _check_precision(owner: str, precision: str | None) -> None:
    if precision not in (None, "ieee", "tf32", "tf32x3"):
        raise ValueError(f"{owner}.precision must be None, 'ieee', 'tf32' or 'tf32x3', got {precision!r}")


@dataclass(frozen=True)
class StateBwdLaunch(Launch):
    """``chunk_bwd_state_kernel`` (None: the rule of ``chunk_bwd``)."""

    BV: int | None = None
    BKH: int | None = None
    num_warps: int | None = None
    num_stages: int | None = None


@dataclass(frozen=True)
class LocalWYLaunch(Launch):
    """``chunk_bwd_local_wy_kernel``."""

    BK: int | None = None
    BV: int | None = None
    num_warps: int = 8
    num_stages: int = 2


@dataclass(frozen=True)
class PairwiseLaunch(Launch):
    """``chunk_bwd_local_pairwise_kernel`` (it holds whole rows: BK is K rounded up)."""


@dataclass(frozen=True)
class BackwardConfig:
    """The three launches of the chunk backward, and the product precision of float32 inputs
    (None: the rule of ``chunk_bwd._dot_precision``)."""

    state: StateBwdLaunch = StateBwdLaunch()
    local_wy: LocalWYLaunch = LocalWYLaunch()
    pairwise: PairwiseLaunch = PairwiseLaunch()
    precision: str | None = None

    def __post_init__(self) -> None:
        _check_precision(type(self).__name__, self.precision)


@dataclass(frozen=True)
class DecodeLaunch(Launch):
    """``fused_recurrent_fwd_kernel``: value columns per state block, and programs per SM (None: one program
    per state block; else this many per SM, each taking every (programs)-th block in turn)."""

    BV: int = 16
    num_warps: int = 1
    programs_per_sm: int | None = None


@dataclass(frozen=True)
class ConvLaunch(Launch):
    """``short_conv_fwd_kernel``: BT tokens by BD channels per program, and the grid's order
    (CHANNELS_FIRST: consecutive programs take the channel tiles of one token tile, so the programs in
    flight read whole rows of x; else the token tiles of one channel tile)."""

    BT: int = 32
    BD: int = 128
    CHANNELS_FIRST: bool = False


@dataclass(frozen=True)
class ConvStateLaunch(Launch):
    """``short_conv_state_kernel``: BR (sequence, channel) rows of the final conv state per program."""

    BR: int = 256


@dataclass(frozen=True)
class ConvBwdLaunch(Launch):
    """``short_conv_bwd_kernel``: BD channels per program and ``tokens`` consecutive tokens per program
    (None: the rule of ``conv.bwd_launch``); each program writes one partial sum of dweight."""

    BD: int = 128
    tokens: int | None = None
    num_warps: int = 1


@dataclass(frozen=True)
class ConvStateBwdLaunch(Launch):
    """``short_conv_bwd_h0_kernel``: BR (sequence, channel) rows of the initial state's gradient per program."""

    BR: int = 256


@dataclass(frozen=True)
class ConvStepLaunch(Launch):
    """``short_conv_step_kernel``: BR (sequence, channel) rows per program."""

    BR: int = 256


@dataclass(frozen=True)
class NormLaunch(Launch):
    """``gated_rms_norm_fwd_kernel`` and ``gated_rms_norm_bwd_kernel``: rows per program tile BR (None: the
    rule of ``gdn2.fast.norm.norm_launch``), and the backward's programs per SM, each taking every
    (programs)-th tile in turn and writing one row of partial dweight."""

    BR: int | None = None
    programs_per_sm: int = 8

