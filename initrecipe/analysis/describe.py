"""What a tensor's live program means in ``torch.nn.init`` terms: ``normal_(mean=0.0, std=0.02)``.

:class:`Describer` reads the live program :mod:`initrecipe.analysis.lineage` finds for a tensor and names
the initializer that produced it, recognised from what the recorder writes for each one:

* ``zeros``, ``ones``, ``full(v)`` (factories, ``fill_``, ``zero_``), ``eye_()``, ``uninitialized``;
* ``normal_(mean, std)`` and ``uniform_(a, b)``, and among them ``kaiming_normal_`` /
  ``kaiming_uniform_`` / ``xavier_normal_`` / ``xavier_uniform_`` when the std or bound is the one
  those functions compute for the tensor's shape (``kaiming_uniform_(a=sqrt(5))``, which
  ``nn.Linear`` uses, is ``uniform_(-b, b)`` with ``b = 1/sqrt(fan_in)``);
* ``trunc_normal_(mean, std, a, b)``: in ``portable`` recipes recorded as
  ``uniform_ -> clamp_ -> erfinv_ -> mul_ -> add_ -> clamp_`` (in float32 and copied into a 16-bit
  tensor; initrecipe 0.2 wrote it without the first ``clamp_``); in ``torch`` recipes as torch's rejection
  loop (``normal_``, then the ``< a`` / ``> b`` test and ``where`` redraws);
* ``orthogonal_(gain)`` (a QR of a normal draw), ``sparse_(sparsity, std)`` and ``dirac_(groups)``
  (as each supported torch release writes them: ``tests/nn_init/``);
* a copy or dtype cast of any of these (``..., as bfloat16``), and writes to part of a tensor
  afterwards (``normal_(...); [1] zeros`` for an embedding's padding row).

Anything else is shown as its operator chain (``mul(reciprocal(pow(10000.0, div(arange(0, 8, 2),
8))), 1.0)``).  Each :class:`Init` has a ``key``: equal keys mean the same initialization (the
parameters compared at 12 significant digits, bounds at the tensor's precision), whatever
operators recorded it; so a ``torch`` and a ``portable`` recording of one ``trunc_normal_`` agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Hashable

import torch

from initrecipe.support.display import dtype_text, number, shape_text, shortest_in
from initrecipe.analysis.lineage import Input, Lineage, Step, TensorLineage, View
from initrecipe.program.operators import CONSTANT_RESULTS, COPY_OPERATORS, Constant, op_info
from initrecipe.program.ir import Call, GenRef, Literal, PortableKey, Ref

__all__ = ["Param", "Init", "Describer", "Uninitialized", "uninitialized_tensors", "index_text"]

_CHAIN_LIMIT = 64  # steps of one storage looked at; longer histories are shown as their last steps
_TEXT_LIMIT = 240  # characters of an operator-chain description


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


def _key_float(value: Any) -> Hashable:
    """Compare recognised float parameters at 12 significant digits (a std recovered from
    ``std * sqrt(2)`` is not always bit-equal to the std given)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    return float(f"{float(value):.12g}")


def _in_dtype(value: Any, dtype: torch.dtype) -> Any:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and dtype.is_floating_point:
        return torch.tensor(float(value), dtype=dtype).item()
    return value


def _init(function: str, params: list[Param], extra: Hashable = None) -> Init:
    shown = ", ".join(f"{p.name}={p.shown}" if p.name else p.shown for p in params)
    text = f"{function}({shown})"
    return Init(function, tuple(params), text, ("init", function, tuple((p.name, p.value) for p in params), extra))


def _p(name: str, value: Any, shown: str | None = None) -> Param:
    """A float parameter (``0`` given for a mean is shown as ``0.0``)."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    return Param(name, shown if shown is not None else number(value), _key_float(value))


def _constant(value: Any) -> Init:
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, (int, float)) and value == 0 and math.copysign(1.0, float(value)) > 0:
        return Init("zeros", (), "zeros", ("init", "zeros"))
    if isinstance(value, (int, float)) and value == 1:
        return Init("ones", (), "ones", ("init", "ones"))
    return _init("full", [Param("", number(value), _key_float(value) if isinstance(value, float) else value)])


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


def _uniform(low: float, high: float, shape: tuple[int, ...]) -> Init:
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
                        return _init("kaiming_uniform_", params + tail)
            if fan_in + fan_out > 0:
                for params, gain in _XAVIER_GAINS:
                    if _close(math.sqrt(3.0) * (gain * math.sqrt(2.0 / float(fan_in + fan_out))), high):
                        return _init("xavier_uniform_", list(params))
        n = round(1.0 / (high * high)) if high < 1e150 else 0
        if n >= 1 and _close(1.0 / math.sqrt(n), high):
            return _init("uniform_", [Param("a", f"-1/sqrt({n})", ("-1/sqrt", n)), Param("b", f"1/sqrt({n})", ("1/sqrt", n))])
    return _init("uniform_", [_p("a", low), _p("b", high)])


def _normal(mean: float, std: float, shape: tuple[int, ...]) -> Init:
    fans = _fans(shape)
    if fans is not None and mean == 0 and isinstance(std, (int, float)) and std > 0:
        fan_in, fan_out = fans
        for mode, fan in (("fan_in", fan_in), ("fan_out", fan_out)):
            if fan <= 0:
                continue
            for params, gain in _GAINS:
                if _close(gain / math.sqrt(fan), std):
                    tail = [Param("mode", "'fan_out'", "fan_out")] if mode == "fan_out" else []
                    return _init("kaiming_normal_", params + tail)
        if fan_in + fan_out > 0:
            for params, gain in _XAVIER_GAINS:
                if _close(gain * math.sqrt(2.0 / float(fan_in + fan_out)), std):
                    return _init("xavier_normal_", list(params))
    return _init("normal_", [_p("mean", mean), _p("std", std)])


def _trunc(mean: float, std: float, a: float, b: float, dtype: torch.dtype) -> Init:
    a, b = _in_dtype(a, dtype), _in_dtype(b, dtype)
    return _init("trunc_normal_", [
        _p("mean", mean), _p("std", std),
        Param("a", shortest_in(a, dtype), _key_float(a)), Param("b", shortest_in(b, dtype), _key_float(b)),
    ])


def index_text(view: View, whole: View) -> str:
    """Where ``view`` lies in a storage laid out as ``whole``: ``[3]``, ``[0, 1]``, ``[2:5]``,
    ``[:, 0:16]``, or ``[as_strided (2, 3) at 7]``."""
    if view.dtype == whole.dtype:
        rem = view.offset - whole.offset
        shape, stride = whole.shape, whole.stride
        for k in range(1, len(shape) + 1):
            if view.shape == shape[k:] and view.stride == stride[k:] and rem >= 0:
                idx, r = [], rem
                for size, st in zip(shape[:k], stride[:k]):
                    if st <= 0:
                        break
                    idx.append(r // st)
                    r %= st
                if len(idx) == k and r == 0 and all(i < s for i, s in zip(idx, shape)):
                    return "[" + ", ".join(map(str, idx)) + "]"
        if len(view.shape) == len(shape) and view.stride == stride:
            differing = [d for d in range(len(shape)) if view.shape[d] != shape[d]]
            if len(differing) == 1 and stride[differing[0]] > 0 and rem % stride[differing[0]] == 0:
                d = differing[0]
                start = rem // stride[d]
                if 0 <= start and start + view.shape[d] <= shape[d]:
                    return "[" + ":, " * d + f"{start}:{start + view.shape[d]}" + "]"
    return f"[as_strided {shape_text(view.shape)} at {view.offset}]"


def _contiguous(view: View) -> bool:
    expected = 1
    for size, stride in reversed(list(zip(view.shape, view.stride))):
        if size != 1 and stride != expected:
            return False
        expected *= size
    return True


def _same_elements(view: View, whole: View) -> bool:
    """Whether ``view`` shows all of ``whole``'s elements in the same order (a reshape)."""
    return (view.dtype == whole.dtype and view.offset == whole.offset and view.numel == whole.numel
            and _contiguous(view) and _contiguous(whole))


def _chain(step: Step) -> tuple[list[Step], int]:
    """The steps since the last full write, oldest first (at most the last ``_CHAIN_LIMIT``), and
    how many older ones were left out."""
    steps: list[Step] = []
    s: Step | None = step
    while s is not None and len(steps) < _CHAIN_LIMIT:
        steps.append(s)
        s = s.prev
    hidden = 0
    while s is not None:
        hidden += 1
        s = s.prev
    steps.reverse()
    return steps, hidden


def _shorten(text: str) -> str:
    return text if len(text) <= _TEXT_LIMIT else text[: _TEXT_LIMIT - 3] + "..."


_HIDDEN_KWARGS = frozenset({"device", "pin_memory", "layout", "memory_format", "generator", "dtype",
                            "requires_grad", "non_blocking"})


class Describer:
    """Describes tensors' live programs; remembers every description it made (so describing all
    tensors of a recipe, or of two, takes time linear in their programs).

    Example:
        >>> import initrecipe, torch
        >>> from initrecipe.analysis.lineage import analyse
        >>> lin = analyse(initrecipe.record(lambda: torch.nn.Linear(4, 2), seed=0))
        >>> d = Describer()
        >>> d.tensor(lin["weight"]).text, d.tensor(lin["bias"]).text
        ('kaiming_uniform_(a=sqrt(5))', 'uniform_(a=-1/sqrt(4), b=1/sqrt(4))')
    """

    def __init__(self) -> None:
        self._versions: dict[int, Init] = {}

    # ------------------------------------------------------------------ public
    def tensor(self, lineage: TensorLineage) -> Init:
        """The initialization of one tensor (the view it shows of its storage included)."""
        init = self.version(lineage.step)
        if lineage.view != lineage.storage_view and lineage.step is not None and not _same_elements(
            lineage.view, lineage.storage_view
        ):
            where = index_text(lineage.view, lineage.storage_view)
            text = f"{init.text} (view {where} of a {shape_text(lineage.storage_view.shape)} tensor)"
            return Init(init.function, init.params, text, ("view", init.key, lineage.view))
        return init

    def uninitialized_elements(self, step: Step | None, views: list[View]) -> list[int | None]:
        """For tensors showing ``views`` of one storage version ``step`` (None: never written), how
        many of each one's elements hold values no instruction wrote: 0 when none, its ``numel``
        when all; ``None`` for "some, not counted" (see :func:`uninitialized_tensors`).

        The version's history since its creation or last full write is replayed, once for all
        the views, on a mask of the storage: the first step sets it (uninitialized when
        :meth:`version` describes that step alone as ``uninitialized``), each later write that
        overwrites a view (``fill_``, ``copy_``, ``normal_``, out= arguments...) marks that view
        written, or unwritten when it copies values no instruction wrote; read-modify-write steps
        (``add_``, ``index_put_``...) leave the marks as they are.  Time: linear in the history,
        plus the mask when the history both writes and leaves unwritten.
        """
        if step is None:
            return [v.numel for v in views]
        chain: list[Step] = []
        s: Step | None = step
        while s is not None:
            chain.append(s)
            s = s.prev
        chain.reverse()
        base = chain[0]
        marks: list[tuple[View, bool]] = []
        for s in chain[1:]:
            written = self._overwrite_mark(s)
            if written is not None:
                marks.append((s.view, written))
        start = not self.version(base).uninitialized
        if all(written == start for _, written in marks):
            return [0 if start else v.numel for v in views]
        return _count_unwritten(views, base.storage_view, start, marks)

    def _overwrite_mark(self, step: Step) -> bool | None:
        """For a write to part of a storage: True when it overwrites its view with values some
        instruction wrote, False when with values none wrote, None when it reads what it writes."""
        if not isinstance(step.ins, Call):
            return True
        if step.out == 0 and not op_info(step.ins.op).overwrites_self:
            return None
        as_init = self._base(_as_covering(step), step.storage_view.dtype)
        return not (as_init is not None and as_init.uninitialized)

    def version(self, step: Step | None) -> Init:
        """The initialization of a storage version (None: never written)."""
        if step is None:
            return Init("uninitialized", (), "uninitialized", ("init", "uninitialized"))
        found = self._versions.get(step.init_id)
        if found is None:
            found = self._versions[step.init_id] = self._describe(step)
        return found

    # ------------------------------------------------------------------ recognition
    def _describe(self, step: Step) -> Init:
        steps, hidden = _chain(step)
        base, rest = steps[0], steps[1:]
        dtype = base.storage_view.dtype
        if hidden == 0:
            special = self._whole_chain(base, rest, dtype)
            if special is not None:
                return special
        first = self._base(base, dtype) if hidden == 0 else None
        if first is not None and not rest:
            return first
        if first is not None:
            parts = [first.text]
        else:
            parts = ([f"... {hidden} earlier ops"] if hidden else []) + [self._step_text(base)]
        for s in rest:
            text = self._step_text(s)
            parts.append(text if s.covers else f"{index_text(s.view, s.storage_view)} {text}")
        return Init("ops", (), _shorten("; ".join(parts)), ("ops", step.init_id))

    def _whole_chain(self, base: Step, rest: list[Step], dtype: torch.dtype) -> Init | None:
        packets = [s.packet for s in rest]
        # portable trunc_normal_: uniform_ -> erfinv_ -> mul_(std * sqrt(2)) -> add_(mean) -> clamp_(a, b)
        # (initrecipe 0.2), or with clamp_ into (-1, 1) before erfinv_ (0.3; in float32, then copied)
        chain = packets[1:] if packets[:1] == ["clamp_"] else packets
        if (base.packet == "uniform_" and chain == ["erfinv_", "mul_", "add_", "clamp_"]
                and all(s.covers and not s.inputs for s in rest) and base.covers):
            scale, mean = _args(rest[-3])[1], _args(rest[-2])[1]
            clamp = _args(rest[-1])
            if all(isinstance(v, (int, float)) for v in (scale, mean, clamp[1], clamp[2])):
                return _trunc(mean, scale / math.sqrt(2.0), clamp[1], clamp[2], dtype)
        # orthogonal_: a copy of Q (of a QR of a normal draw), then mul_(gain)
        if base.packet == "copy_" and packets == ["mul_"] and rest[0].covers and not rest[0].inputs:
            src = _input(base, 1)
            if src is not None and src.step is not None and _chain(src.step)[0][0].packet == "linalg_qr":
                gain = _args(rest[0])[1]
                return _init("orthogonal_", [] if gain == 1 else [_p("gain", gain)])
        # dirac_: zeros, then a one at the centre of each (d, d) kernel, group after group
        if CONSTANT_RESULTS.get(base.packet) is Constant.ZEROS and base.covers and rest and 3 <= len(base.view.shape) <= 5:
            groups = self._dirac_groups(base, rest)
            if groups is not None:
                return _init("dirac_", [] if groups == 1 else [Param("groups", str(groups), groups)])
        # sparse_: normal_(0, std), then zeros at random rows of each column
        if base.packet == "normal_" and base.covers and rest and len(base.view.shape) == 2:
            zeroed = [self._zeroed_rows(s) for s in rest]
            mean, std = _args(base)[1:3]
            rows = base.view.shape[0]
            if mean == 0 and rows and all(z is not None and z.view.shape for z in zeroed):
                sparsity = zeroed[0].view.shape[0] / rows  # type: ignore[union-attr]
                return _init("sparse_", [_p("sparsity", sparsity), _p("std", std)])
        return None

    def _dirac_groups(self, base: Step, rest: list[Step]) -> int | None:
        """The ``groups`` of a ``dirac_`` whose single-element writes of one are ``rest``, or None.

        ``tensor[g * out + d, d, *centre] = 1`` is a ``copy_`` of a one up to torch 2.14, a
        ``fill_(1)`` from 2.15 (``tests/nn_init/``)."""
        offsets = []
        for s in rest:
            if s.view.shape != () or s.view.dtype != base.view.dtype:
                return None
            if s.packet == "fill_" and not s.inputs:
                value = _named(s, "value")
                if not (isinstance(value, (int, float)) and value == 1):
                    return None
            elif s.packet == "copy_":
                src = _input(s, 1)
                if src is None or src.step is None or self._input_init(src).function != "ones":
                    return None
            else:
                return None
            offsets.append(s.view.offset - base.view.offset)
        shape, stride = base.view.shape, base.view.stride
        centre = sum((k // 2) * st for k, st in zip(shape[2:], stride[2:]))
        for groups in range(1, shape[0] + 1):
            if shape[0] % groups:
                continue
            out = shape[0] // groups
            expected = [(g * out + d) * stride[0] + d * stride[1] + centre
                        for g in range(groups) for d in range(min(out, shape[1]))]
            if expected == offsets:
                return groups
        return None

    def _zeroed_rows(self, step: Step) -> Input | None:
        """The row indices a step sets to zero in one column of a 2-D storage (``sparse_``'s
        ``tensor[rows, col] = 0``), or None when it is not such a write.

        torch lowers that assignment differently from release to release: up to 2.14 as
        ``select(w, 1, col).index_put_([rows], zeros)``, from 2.15 as
        ``select(w, 1, col).index_fill_(0, rows, 0)``; ``tests/nn_init/`` holds each version's
        recording."""
        whole = step.storage_view
        if step.covers or step.view.shape != whole.shape[:1] or step.view.stride != whole.stride[:1]:
            return None
        if step.packet == "index_put_":
            values = _input(step, 2)
            if values is None or values.step is None or self.version(values.step).function != "zeros":
                return None
            return _input(step, 1)
        if step.packet == "index_fill_":
            dim, value = _args(step)[1], _args(step)[3]
            if dim != 0:
                return None
            if isinstance(value, Ref):
                filled = _input(step, 3)
                if filled is None or filled.step is None or self.version(filled.step).function != "zeros":
                    return None
            elif not (isinstance(value, (int, float)) and value == 0 and math.copysign(1.0, float(value)) > 0):
                return None
            return _input(step, 2)
        return None

    def _base(self, step: Step, dtype: torch.dtype) -> Init | None:
        """A full write (or creation) in nn.init terms; None when it is not one."""
        packet = step.packet
        if packet == "literal":
            assert isinstance(step.ins, Literal)
            if math.prod(step.ins.shape) == 1:
                return _constant(torch.frombuffer(bytearray(step.ins.data), dtype=step.ins.dtype).item())
            return Init("literal", (), f"literal {shape_text(step.ins.shape)}", ("literal", step.init_id))
        if not step.covers:
            return None
        constant = CONSTANT_RESULTS.get(packet)
        if constant is Constant.EMPTY:
            return Init("uninitialized", (), "uninitialized", ("init", "uninitialized"))
        if constant is Constant.ZEROS:
            return _constant(0)
        if constant is Constant.ONES:
            return _constant(1)
        if constant is Constant.FULL and not step.inputs:
            value = _named(step, "value")
            if value is None:
                value = _named(step, "fill_value")
            return _constant(value) if isinstance(value, (int, float)) else None
        if packet == "normal_":
            return _normal(_named(step, "mean"), _named(step, "std"), step.view.shape)
        if packet == "uniform_":
            return _uniform(_named(step, "from"), _named(step, "to"), step.view.shape)
        if packet == "eye":
            return Init("eye_", (), "eye_()", ("init", "eye_"))
        if packet in COPY_OPERATORS:
            src = _input(step, 1 if packet == "copy_" else 0)
            if src is None or src.step is None:
                return None
            trunc = self._rejection_loop(src.step, dtype)
            if trunc is not None:
                return trunc
            inner = self._input_init(src)
            values = [p.value for p in inner.params]
            if (inner.function == "trunc_normal_" and src.view.shape == step.view.shape
                    and all(isinstance(v, float) for v in values)):
                # portable trunc_normal_ of a 16-bit tensor: computed in float32, copied (rounded once)
                return _trunc(*values, dtype)
            if src.view.dtype != step.view.dtype:
                return Init(inner.function, inner.params, f"{inner.text}, as {dtype_text(step.view.dtype)}",
                            ("cast", inner.key, step.view.dtype))
            if src.view.shape != step.view.shape:
                return None
            return inner
        return None

    def _rejection_loop(self, step: Step, dtype: torch.dtype) -> Init | None:
        """torch's ``trunc_normal_`` when it rejected something: the final ``copy_`` of
        ``where(rejected, redraw, kept)``, nested once per round, around the first draw."""
        wheres = []
        while step.packet == "where" and (kept := _input(step, 2)) is not None and kept.step is not None:
            wheres.append(step)
            step = kept.step
        if not wheres or not step.covers:
            return None
        if step.packet == "normal_" and step.prev is None:
            # normal_(mean, std), then redraws where `(x < a) | (x > b)`.
            cond = _input(wheres[-1], 0)
            if cond is None or cond.step is None or cond.step.packet != "bitwise_or":
                return None
            tests = {}
            for pos in (0, 1):
                test = _input(cond.step, pos)
                if test is not None and test.step is not None and test.step.packet in ("lt", "gt"):
                    bound = _args(test.step)[1]
                    if isinstance(bound, (int, float)) and not isinstance(bound, bool):
                        tests[test.step.packet] = bound
            if set(tests) != {"lt", "gt"}:
                return None
            return _trunc(_named(step, "mean"), _named(step, "std"), tests["lt"], tests["gt"], dtype)
        if step.packet == "uniform_" and step.prev is None:
            # Small acceptance probability: uniform_(a, b) candidates accepted by comparing the
            # log of a uniform draw with the normal log-density `-((x - mean) / std)**2 / 2 - peak`.
            cond = _input(wheres[-1], 0)
            if cond is None or cond.step is None or cond.step.packet != "gt":
                return None
            density = _input(cond.step, 1)
            if density is None or density.step is None:
                return None
            chain = _chain(density.step)[0]
            if [c.packet for c in chain] != ["copy_", "sub_", "div_", "pow_", "mul_", "sub_"]:
                return None
            mean, std = _args(chain[1])[1], _args(chain[2])[1]
            return _trunc(mean, std, _named(step, "from"), _named(step, "to"), dtype)
        return None

    def _input_init(self, inp: Input) -> Init:
        init = self.version(inp.step)
        if inp.step is not None and inp.view != inp.step.storage_view:
            where = index_text(inp.view, inp.step.storage_view)
            return Init(init.function, init.params, f"{init.text} {where}", ("view", init.key, inp.view))
        return init

    def _step_text(self, step: Step) -> str:
        """One step as an operator call, its tensor arguments described (nested, capped)."""
        if step.packet == "copy_":
            src = _input(step, 1)
            if src is not None:
                return self._input_init(src).text
        as_init = self._base(_as_covering(step), step.storage_view.dtype)
        return as_init.text if as_init is not None else self._call_text(step)

    def _call_text(self, step: Step) -> str:
        ins = step.ins
        if not isinstance(ins, Call):
            return "literal"
        info = op_info(ins.op)
        packet = step.packet
        by_position: dict[int | str, list[Input]] = {}
        for inp in step.inputs:
            by_position.setdefault(inp.position, []).append(inp)
        in_place = bool(info.written_args) and 0 in info.written_args

        def render(value: Any, pos: int | str) -> str | None:
            if isinstance(value, Ref):
                queue = by_position.get(pos)
                if not queue:
                    return None  # the written tensor itself
                return _shorten(self._input_init(queue.pop(0)).text)
            if isinstance(value, (GenRef, PortableKey)):
                return None
            if isinstance(value, (list, tuple)):
                items = [render(v, pos) for v in value]
                return "[" + ", ".join(i for i in items if i is not None) + "]"
            if isinstance(value, torch.dtype):
                return dtype_text(value)
            if isinstance(value, str):
                return repr(value)
            return number(value)

        shown = []
        for pos, a in enumerate(ins.args):
            if pos == 0 and in_place:
                continue
            text = render(a, pos)
            if text is not None:
                shown.append(text)
        for name, a in ins.kwargs.items():
            if name in _HIDDEN_KWARGS or (info.written_args and name in [info.arg_names[p] for p in info.written_args]):
                continue
            pos = info.arg_names.index(name) if name in info.arg_names else name
            text = render(a, pos)
            if text is not None:
                shown.append(f"{name}={text}")
        return _shorten(f"{packet}({', '.join(shown)})")


_MASK_LIMIT = 1 << 27
"""Largest mask (bytes, one per storage element or byte) :meth:`Describer.uninitialized_elements`
builds to count the unwritten elements of a partly written storage; larger ones are not counted."""


def _count_unwritten(tensors: list[View], storage: View, start: bool,
                     marks: list[tuple[View, bool]]) -> list[int | None]:
    """Replay ``marks`` (view, written) on a mask of the storage (initially ``start``) and count
    each tensor view's unwritten elements; None each when the mask would exceed :data:`_MASK_LIMIT`."""
    views = [storage] + [v for v, _ in marks] + tensors
    itemsize = storage.dtype.itemsize
    by_byte = any(v.dtype.itemsize != itemsize for v in views)
    size = max(_extent(*_mask_geometry(v, by_byte)) for v in views)
    if size > _MASK_LIMIT:
        return [None] * len(tensors)
    mask = torch.full((size,), start, dtype=torch.bool)
    for view, written in marks:
        shape, stride, offset = _mask_geometry(view, by_byte)
        if 0 in shape:
            continue
        # Expanded (stride-0) dimensions write the same elements again: write them once.
        shape = tuple(1 if st == 0 else n for n, st in zip(shape, stride))
        try:
            mask.as_strided(shape, stride, offset).fill_(written)
        except RuntimeError:  # a view whose elements overlap (unfold): write through their offsets
            where = torch.arange(size).as_strided(shape, stride, offset).reshape(-1)
            mask[where] = written
    counts: list[int | None] = []
    for view in tensors:
        shape, stride, offset = _mask_geometry(view, by_byte)
        if 0 in shape:
            counts.append(0)
            continue
        unwritten = ~mask.as_strided(shape, stride, offset)
        if by_byte:  # an element is unwritten when any of its bytes is
            unwritten = unwritten.reshape(-1, view.dtype.itemsize).any(dim=1)
        counts.append(int(unwritten.sum()))
    return counts


def _mask_geometry(view: View, by_byte: bool) -> tuple[tuple[int, ...], tuple[int, ...], int]:
    if not by_byte:
        return view.shape, view.stride, view.offset
    size = view.dtype.itemsize
    return (*view.shape, size), (*(st * size for st in view.stride), 1), view.offset * size


def _extent(shape: tuple[int, ...], stride: tuple[int, ...], offset: int) -> int:
    """One past the last element (or byte) a view reaches."""
    if 0 in shape:
        return offset
    return offset + sum((n - 1) * st for n, st in zip(shape, stride)) + 1


@dataclass(frozen=True, slots=True)
class Uninitialized:
    """A tensor replay leaves (fully or partly) uninitialized, as eager does: ``elements`` of its
    ``numel`` elements hold whatever memory held, because no instruction wrote them (``None``:
    some of them, not counted; a storage over the counting limit)."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    numel: int
    elements: int | None

    @property
    def partly(self) -> bool:
        return self.elements != self.numel

    @property
    def why(self) -> str:
        """Why, and what to do, in one sentence."""
        if not self.partly:
            return ("uninitialized: written by no instruction; eager gives whatever memory holds: "
                    "initialize it in the constructor or with init_weights")
        count = "some" if self.elements is None else f"{self.elements:,} of {self.numel:,}"
        return (f"partly uninitialized: {count} elements written by no instruction; eager gives whatever "
                "memory holds there: initialize all of it in the constructor or with init_weights")

    def text(self) -> str:
        """``name (shape) dtype: why`` (the name as stored: escape it before printing)."""
        return f"`{self.name}` {shape_text(self.shape)} {dtype_text(self.dtype)} {self.why}"


def uninitialized_tensors(lineage: Lineage, describer: Describer | None = None) -> list[Uninitialized]:
    """Every tensor name of a recipe whose values replay would leave (fully or partly)
    uninitialized, in recipe order; tied names are listed each.

    The one decision behind ``show``'s ``uninitialized``, ``check``'s warnings, ``record``'s
    :class:`~initrecipe.errors.UninitializedWarning` and ``diff``'s ``initialized`` changes.
    Partial writes are counted element by element (a mask of the storage, built only for a
    storage that is partly written; at most :data:`_MASK_LIMIT` bytes, above which the count is
    ``None``).  Writes through index tensors (``index_put_``, ``scatter_``, ``masked_fill_``:
    their reach depends on data) count as writing nothing.  Not traced: values computed *from*
    partly uninitialized tensors (a ``copy_`` of a half-written buffer counts as written),
    read-modify-write ops on uninitialized inputs (``add_(torch.empty(...))``) and the bytes a
    ``resize_`` adds to a storage.

    Example:
        >>> import initrecipe, torch, warnings
        >>> from initrecipe.analysis.lineage import analyse
        >>> fn = lambda: torch.nn.ParameterDict({"w": torch.nn.Parameter(torch.empty(3, 4))})
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore", initrecipe.UninitializedWarning)
        ...     recipe = initrecipe.record(fn, seed=0)
        >>> [(u.name, u.elements, u.numel) for u in uninitialized_tensors(analyse(recipe))]
        [('w', 12, 12)]
    """
    describer = describer if describer is not None else Describer()
    by_version: dict[int, list[TensorLineage]] = {}  # the tensors of one storage share its last version
    for t in lineage:
        by_version.setdefault(id(t.step), []).append(t)
    counts: dict[str, int | None] = {}
    for tensors in by_version.values():
        found = describer.uninitialized_elements(tensors[0].step, [t.view for t in tensors])
        counts.update((t.entry.name, n) for t, n in zip(tensors, found))
    out = []
    for t in lineage:
        count = counts[t.entry.name]
        if count != 0:
            e = t.entry
            out.append(Uninitialized(e.name, e.shape, e.dtype, t.view.numel, count))
    return out


def _as_covering(step: Step) -> Step:
    """The same step as if it wrote all of its storage (to describe a partial write by its op)."""
    if step.covers:
        return step
    clone = Step(step.index, step.ins, step.out, step.view, step.view, None, step.inputs, step.draw)
    clone.init_id = step.init_id
    return clone


def _args(step: Step) -> list[Any]:
    """A call's arguments by schema position, defaults filled in."""
    ins = step.ins
    assert isinstance(ins, Call)
    info = op_info(ins.op)
    out = []
    for pos, argument in enumerate(info.schema.arguments):
        if pos < len(ins.args):
            out.append(ins.args[pos])
        elif argument.name in ins.kwargs:
            out.append(ins.kwargs[argument.name])
        else:
            out.append(argument.default_value)
    return out


def _named(step: Step, name: str) -> Any:
    ins = step.ins
    assert isinstance(ins, Call)
    info = op_info(ins.op)
    if name not in info.arg_names:
        return None
    return _args(step)[info.arg_names.index(name)]


def _input(step: Step, position: int) -> Input | None:
    for inp in step.inputs:
        if inp.position == position:
            return inp
    return None
