"""Other default launch settings for a benchmark run: what ``resources.py --set`` and
``bench_layer.py --variants`` compile or time instead of the drivers' defaults.

A setting is ``fwd.<stage>.<field>=<value>`` or ``bwd.<stage>.<field>=<value>``: the field of the launch
dataclass that ``ForwardConfig()`` / ``BackwardConfig()`` hold for that stage (``gdn2.fast.config``),
which is what the drivers use when a call passes no config. ``recompute=<True|False|partial|states>`` is the
one setting that is not a launch: the ``recompute`` mode the Triton layer passes to ``chunk_gdn2``.
``conv.fwd.<field>=<value>`` and ``conv.bwd.<field>=<value>`` set a field of the short convolution's
launch (``ConvLaunch``, ``ConvBwdLaunch``) over what its rule (``conv.fwd_launch``, ``conv.bwd_launch``)
picks for each call; the other fields keep the rule's values.
A variant is settings joined by ``+`` ("bwd.pairwise.num_warps=8+bwd.local_wy.BK=32"); "" is the defaults.
"""

import contextlib
import dataclasses
import functools

__all__ = ["parse", "apply", "overridden"]


def _value(raw: str):
    if raw == "None":
        return None
    if raw in ("True", "False"):
        return raw == "True"
    return int(raw) if raw.lstrip("-").isdigit() else raw


def parse(variant: str) -> list[str]:
    """The settings of a variant ("" -> [])."""
    return [s for s in variant.split("+") if s]


def apply(settings: list[str]) -> str:
    """Apply ``settings`` for the rest of the process; returns a label (the settings joined by ", ").

    A misspelt stage is a ValueError, a misspelt field a TypeError (the launch dataclasses reject it),
    a bad value the dataclass's ValueError: nothing is applied unless every setting is valid."""
    from gdn2.fast import config as cfg
    from gdn2.fast import conv, layer

    classes = {"fwd": cfg.ForwardConfig, "bwd": cfg.BackwardConfig}
    defaults = {side: list(cls.__init__.__defaults__) for side, cls in classes.items()}
    conv_rules = {"fwd": ("fwd_launch", cfg.ConvLaunch), "bwd": ("bwd_launch", cfg.ConvBwdLaunch)}
    conv_fields: dict[str, dict] = {}
    recompute = None
    for item in settings:
        path, eq, raw = item.partition("=")
        if not eq:
            raise ValueError(f"a setting is NAME=VALUE, got {item!r}")
        if path == "recompute":
            if raw not in ("True", "False", "partial", "states"):
                raise ValueError(f"recompute must be True, False, partial or states, got {raw!r}")
            recompute = _value(raw)
            continue
        side, _, rest = path.partition(".")
        stage, _, field = rest.partition(".")
        if side == "conv":
            if stage not in conv_rules:
                raise ValueError(f"a convolution setting is conv.fwd.FIELD or conv.bwd.FIELD, got {item!r}")
            fields = {**conv_fields.get(stage, {}), field: _value(raw)}
            dataclasses.replace(conv_rules[stage][1](), **fields)       # a bad field or value raises here
            conv_fields[stage] = fields
            continue
        if side not in classes:
            raise ValueError(f"a launch setting starts with fwd. or bwd., got {item!r}")
        names = [f.name for f in dataclasses.fields(classes[side])]
        if stage not in names or stage == "precision":
            raise ValueError(f"{side} has no launch stage {stage!r} (stages: {names[:-1]})")
        i = names.index(stage)
        defaults[side][i] = dataclasses.replace(defaults[side][i], **{field: _value(raw)})
    for side, cls in classes.items():
        cls.__init__.__defaults__ = tuple(defaults[side])
    for stage, fields in conv_fields.items():
        name = conv_rules[stage][0]
        setattr(conv, name, functools.partial(_replaced, getattr(conv, name), fields))
    if recompute is not None:               # the layer passes its own recompute: this one wins over it
        layer.chunk_gdn2 = functools.partial(_forced_recompute, layer.chunk_gdn2, recompute)
    return ", ".join(settings)


def _replaced(rule, fields, /, *args, **kwargs):
    """The launch ``rule`` picks for this call, with ``fields`` replaced."""
    return dataclasses.replace(rule(*args, **kwargs), **fields)


def _forced_recompute(op, forced, /, *args, **kwargs):
    """``op`` with ``recompute=forced`` whatever the caller passed."""
    return op(*args, **{**kwargs, "recompute": forced})


def validate(variants: list[str]) -> None:
    """Raise as :func:`apply` would for the first invalid variant ("a+b" settings each); applies nothing."""
    for variant in variants:
        with overridden(parse(variant)):
            pass


@contextlib.contextmanager
def overridden(settings: list[str]):
    """``apply(settings)`` inside the block, the drivers' defaults again after it; yields the label."""
    from gdn2.fast import config as cfg
    from gdn2.fast import conv, layer

    saved = (cfg.ForwardConfig.__init__.__defaults__, cfg.BackwardConfig.__init__.__defaults__, layer.chunk_gdn2,
             conv.fwd_launch, conv.bwd_launch)
    try:
        yield apply(settings)
    finally:
        (cfg.ForwardConfig.__init__.__defaults__, cfg.BackwardConfig.__init__.__defaults__, layer.chunk_gdn2,
         conv.fwd_launch, conv.bwd_launch) = saved
