"""``torch.nn.init`` initializers recognised from their parameters: what :class:`Init` a fill with
these numbers is (``normal_(0, std)`` with the std ``kaiming_normal_`` computes for the tensor's
shape is ``kaiming_normal_``), and the :class:`Init` and :class:`Param` values that describe it.

:class:`~initrecipe.analysis.describe.Describer` finds the parameters in a tensor's live program;
this module names the initializer.  Each :class:`Init` has a ``key``: equal keys mean the same
initialization (the parameters compared at 12 significant digits, bounds at the tensor's precision).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Hashable

import torch

from initrecipe.support.display import number, shortest_in

__all__ = ["Param", "Init", "UNINITIALIZED", "init_call", "float_param", "constant_init", "uniform_init",
           "normal_init", "trunc_normal_init"]


@dataclass(frozen=True, slots=True)
class Param:
    """One parameter of a recognised initializer: its name, how it is shown, and its exact value."""

    name: str
    shown: str
    value: Hashable


@dataclass(frozen=True, slots=True)
class Init:
    """How a tensor is initialized.

    ``function`` is the ``nn.init``-level name (``normal_``, ``kaiming_uniform_``, ``zeros``,
    ``full``, ``trunc_normal_``...), or ``ops`` for an operator chain; ``text`` is what people read;
    ``key`` is equal for equal initializations.
    """

    function: str
    params: tuple[Param, ...]
    text: str
    key: Hashable

    @property
    def recognised(self) -> bool:
        return self.function != "ops"

    @property
    def uninitialized(self) -> bool:
        """Whether these are values no instruction wrote (an ``empty`` allocation, or a copy of one)."""
        return self.function == "uninitialized"


UNINITIALIZED = Init("uninitialized", (), "uninitialized", ("init", "uninitialized"))
"""Values no instruction wrote."""


def _key_float(value: object) -> Hashable:
    """Compare recognised float parameters at 12 significant digits (a std recovered from
    ``std * sqrt(2)`` is not always bit-equal to the std given)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    return float(f"{float(value):.12g}")


def _in_dtype(value: object, dtype: torch.dtype) -> object:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and dtype.is_floating_point:
        return torch.tensor(float(value), dtype=dtype).item()
    return value


def init_call(function: str, params: list[Param]) -> Init:
    """The :class:`Init` of ``function(params)``, shown as such."""
    shown = ", ".join(f"{p.name}={p.shown}" if p.name else p.shown for p in params)
    text = f"{function}({shown})"
    return Init(function, tuple(params), text, ("init", function, tuple((p.name, p.value) for p in params)))


def float_param(name: str, value: object, shown: str | None = None) -> Param:
    """A float parameter (``0`` given for a mean is shown as ``0.0``)."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    return Param(name, shown if shown is not None else number(value), _key_float(value))


def constant_init(value: object) -> Init:
    """``zeros``, ``ones`` or ``full(value)``."""
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, (int, float)) and value == 0 and math.copysign(1.0, float(value)) > 0:
        return Init("zeros", (), "zeros", ("init", "zeros"))
    if isinstance(value, (int, float)) and value == 1:
        return Init("ones", (), "ones", ("init", "ones"))
    return init_call("full", [Param("", number(value), _key_float(value) if isinstance(value, float) else value)])


def _close(a: float, b: float) -> bool:
    return a == b or abs(a - b) <= 1e-12 * max(abs(a), abs(b))


def _fans(shape: tuple[int, ...]) -> tuple[int, int] | None:
    if len(shape) < 2:
        return None
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def _gains() -> list[tuple[list[Param], float]]:
    gain = torch.nn.init.calculate_gain
    return [
        ([Param("a", "sqrt(5)", "sqrt(5)")], gain("leaky_relu", math.sqrt(5))),
        ([], gain("leaky_relu", 0)),
        ([Param("nonlinearity", "'linear'", "linear")], gain("linear")),
        ([Param("nonlinearity", "'tanh'", "tanh")], gain("tanh")),
        ([Param("nonlinearity", "'selu'", "selu")], gain("selu")),
    ]


_GAINS = _gains()
_XAVIER_GAINS = [([], 1.0)] + [([Param("gain", number(g), _key_float(g))], g) for _, g in _GAINS[1:2] + _GAINS[3:4]]


def uniform_init(low: float, high: float, shape: tuple[int, ...]) -> Init:
    """``uniform_(low, high)``, or the ``kaiming_uniform_`` / ``xavier_uniform_`` / ``1/sqrt(n)`` bound it is for ``shape``."""
    if isinstance(low, (int, float)) and isinstance(high, (int, float)) and low == -high and high > 0:
        fans = _fans(shape)
        if fans is not None:
            fan_in, fan_out = fans
            for mode, fan in (("fan_in", fan_in), ("fan_out", fan_out)):
                if fan <= 0:
                    continue
                for params, gain in _GAINS:
                    if _close(math.sqrt(3.0) * (gain / math.sqrt(fan)), high):
                        tail = [Param("mode", "'fan_out'", "fan_out")] if mode == "fan_out" else []
                        return init_call("kaiming_uniform_", params + tail)
            if fan_in + fan_out > 0:
                for params, gain in _XAVIER_GAINS:
                    if _close(math.sqrt(3.0) * (gain * math.sqrt(2.0 / float(fan_in + fan_out))), high):
                        return init_call("xavier_uniform_", list(params))
        n = round(1.0 / (high * high)) if high < 1e150 else 0
        if n >= 1 and _close(1.0 / math.sqrt(n), high):
            return init_call("uniform_", [Param("a", f"-1/sqrt({n})", ("-1/sqrt", n)), Param("b", f"1/sqrt({n})", ("1/sqrt", n))])
    return init_call("uniform_", [float_param("a", low), float_param("b", high)])


def normal_init(mean: float, std: float, shape: tuple[int, ...]) -> Init:
    """``normal_(mean, std)``, or the ``kaiming_normal_`` / ``xavier_normal_`` it is for ``shape``."""
    fans = _fans(shape)
    if fans is not None and mean == 0 and isinstance(std, (int, float)) and std > 0:
        fan_in, fan_out = fans
        for mode, fan in (("fan_in", fan_in), ("fan_out", fan_out)):
            if fan <= 0:
                continue
            for params, gain in _GAINS:
                if _close(gain / math.sqrt(fan), std):
                    tail = [Param("mode", "'fan_out'", "fan_out")] if mode == "fan_out" else []
                    return init_call("kaiming_normal_", params + tail)
        if fan_in + fan_out > 0:
            for params, gain in _XAVIER_GAINS:
                if _close(gain * math.sqrt(2.0 / float(fan_in + fan_out)), std):
                    return init_call("xavier_normal_", list(params))
    return init_call("normal_", [float_param("mean", mean), float_param("std", std)])


def trunc_normal_init(mean: float, std: float, a: float, b: float, dtype: torch.dtype) -> Init:
    """``trunc_normal_(mean, std, a, b)``, the bounds as ``dtype`` holds them."""
    a, b = _in_dtype(a, dtype), _in_dtype(b, dtype)
    return init_call("trunc_normal_", [
        float_param("mean", mean), float_param("std", std),
        Param("a", shortest_in(a, dtype), _key_float(a)), Param("b", shortest_in(b, dtype), _key_float(b)),
    ])
