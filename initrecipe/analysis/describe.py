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

import torch

from initrecipe.analysis.describe_text import call_text, index_text, shorten
from initrecipe.analysis.history import as_covering, call_args, input_at, named_arg, recent_steps, same_elements
from initrecipe.analysis.initializers import (UNINITIALIZED, Init, Param, constant_init, float_param, init_call,
                                              normal_init, trunc_normal_init, uniform_init)
from initrecipe.analysis.lineage import Input, Step, TensorLineage
from initrecipe.program.operators import CONSTANT_RESULTS, COPY_OPERATORS, Constant
from initrecipe.program.ir import Literal, Ref
from initrecipe.support.display import dtype_text, shape_text

__all__ = ["Describer"]


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
        if lineage.view != lineage.storage_view and lineage.step is not None and not same_elements(
            lineage.view, lineage.storage_view
        ):
            where = index_text(lineage.view, lineage.storage_view)
            text = f"{init.text} (view {where} of a {shape_text(lineage.storage_view.shape)} tensor)"
            return Init(init.function, init.params, text, ("view", init.key, lineage.view))
        return init

    def full_write(self, step: Step) -> Init | None:
        """A step in nn.init terms as if it wrote all of its storage (a partial write described by
        its op); None when it is not an initializer."""
        return self._base(as_covering(step), step.storage_view.dtype)

    def version(self, step: Step | None) -> Init:
        """The initialization of a storage version (None: never written)."""
        if step is None:
            return UNINITIALIZED
        found = self._versions.get(step.init_id)
        if found is None:
            found = self._versions[step.init_id] = self._describe(step)
        return found

    # ------------------------------------------------------------------ recognition
    def _describe(self, step: Step) -> Init:
        steps, hidden = recent_steps(step)
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
        return Init("ops", (), shorten("; ".join(parts)), ("ops", step.init_id))

    def _whole_chain(self, base: Step, rest: list[Step], dtype: torch.dtype) -> Init | None:
        packets = [s.packet for s in rest]
        # portable trunc_normal_: uniform_ -> erfinv_ -> mul_(std * sqrt(2)) -> add_(mean) -> clamp_(a, b)
        # (initrecipe 0.2), or with clamp_ into (-1, 1) before erfinv_ (0.3; in float32, then copied)
        chain = packets[1:] if packets[:1] == ["clamp_"] else packets
        if (base.packet == "uniform_" and chain == ["erfinv_", "mul_", "add_", "clamp_"]
                and all(s.covers and not s.inputs for s in rest) and base.covers):
            scale, mean = call_args(rest[-3])[1], call_args(rest[-2])[1]
            clamp = call_args(rest[-1])
            if all(isinstance(v, (int, float)) for v in (scale, mean, clamp[1], clamp[2])):
                return trunc_normal_init(mean, scale / math.sqrt(2.0), clamp[1], clamp[2], dtype)
        # orthogonal_: a copy of Q (of a QR of a normal draw), then mul_(gain)
        if base.packet == "copy_" and packets == ["mul_"] and rest[0].covers and not rest[0].inputs:
            src = input_at(base, 1)
            if src is not None and src.step is not None and recent_steps(src.step)[0][0].packet == "linalg_qr":
                gain = call_args(rest[0])[1]
                return init_call("orthogonal_", [] if gain == 1 else [float_param("gain", gain)])
        # dirac_: zeros, then a one at the centre of each (d, d) kernel, group after group
        if CONSTANT_RESULTS.get(base.packet) is Constant.ZEROS and base.covers and rest and 3 <= len(base.view.shape) <= 5:
            groups = self._dirac_groups(base, rest)
            if groups is not None:
                return init_call("dirac_", [] if groups == 1 else [Param("groups", str(groups), groups)])
        # sparse_: normal_(0, std), then zeros at random rows of each column
        if base.packet == "normal_" and base.covers and rest and len(base.view.shape) == 2:
            zeroed = [self._zeroed_rows(s) for s in rest]
            mean, std = call_args(base)[1:3]
            rows = base.view.shape[0]
            if mean == 0 and rows and all(z is not None and z.view.shape for z in zeroed):
                sparsity = zeroed[0].view.shape[0] / rows  # type: ignore[union-attr]
                return init_call("sparse_", [float_param("sparsity", sparsity), float_param("std", std)])
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
                value = named_arg(s, "value")
                if not (isinstance(value, (int, float)) and value == 1):
                    return None
            elif s.packet == "copy_":
                src = input_at(s, 1)
                if src is None or src.step is None or self.input_init(src).function != "ones":
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
            values = input_at(step, 2)
            if values is None or values.step is None or self.version(values.step).function != "zeros":
                return None
            return input_at(step, 1)
        if step.packet == "index_fill_":
            dim, value = call_args(step)[1], call_args(step)[3]
            if dim != 0:
                return None
            if isinstance(value, Ref):
                filled = input_at(step, 3)
                if filled is None or filled.step is None or self.version(filled.step).function != "zeros":
                    return None
            elif not (isinstance(value, (int, float)) and value == 0 and math.copysign(1.0, float(value)) > 0):
                return None
            return input_at(step, 2)
        return None

    def _base(self, step: Step, dtype: torch.dtype) -> Init | None:
        """A full write (or creation) in nn.init terms; None when it is not one."""
        packet = step.packet
        if packet == "literal":
            assert isinstance(step.ins, Literal)
            if math.prod(step.ins.shape) == 1:
                return constant_init(torch.frombuffer(bytearray(step.ins.data), dtype=step.ins.dtype).item())
            return Init("literal", (), f"literal {shape_text(step.ins.shape)}", ("literal", step.init_id))
        if not step.covers:
            return None
        constant = CONSTANT_RESULTS.get(packet)
        if constant is Constant.EMPTY:
            return UNINITIALIZED
        if constant is Constant.ZEROS:
            return constant_init(0)
        if constant is Constant.ONES:
            return constant_init(1)
        if constant is Constant.FULL and not step.inputs:
            value = named_arg(step, "value")
            if value is None:
                value = named_arg(step, "fill_value")
            return constant_init(value) if isinstance(value, (int, float)) else None
        if packet == "normal_":
            return normal_init(named_arg(step, "mean"), named_arg(step, "std"), step.view.shape)
        if packet == "uniform_":
            return uniform_init(named_arg(step, "from"), named_arg(step, "to"), step.view.shape)
        if packet == "eye":
            return Init("eye_", (), "eye_()", ("init", "eye_"))
        if packet in COPY_OPERATORS:
            src = input_at(step, 1 if packet == "copy_" else 0)
            if src is None or src.step is None:
                return None
            trunc = self._rejection_loop(src.step, dtype)
            if trunc is not None:
                return trunc
            inner = self.input_init(src)
            values = [p.value for p in inner.params]
            if (inner.function == "trunc_normal_" and src.view.shape == step.view.shape
                    and all(isinstance(v, float) for v in values)):
                # portable trunc_normal_ of a 16-bit tensor: computed in float32, copied (rounded once)
                return trunc_normal_init(*values, dtype)
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
        while step.packet == "where" and (kept := input_at(step, 2)) is not None and kept.step is not None:
            wheres.append(step)
            step = kept.step
        if not wheres or not step.covers:
            return None
        if step.packet == "normal_" and step.prev is None:
            # normal_(mean, std), then redraws where `(x < a) | (x > b)`.
            cond = input_at(wheres[-1], 0)
            if cond is None or cond.step is None or cond.step.packet != "bitwise_or":
                return None
            tests = {}
            for pos in (0, 1):
                test = input_at(cond.step, pos)
                if test is not None and test.step is not None and test.step.packet in ("lt", "gt"):
                    bound = call_args(test.step)[1]
                    if isinstance(bound, (int, float)) and not isinstance(bound, bool):
                        tests[test.step.packet] = bound
            if set(tests) != {"lt", "gt"}:
                return None
            return trunc_normal_init(named_arg(step, "mean"), named_arg(step, "std"), tests["lt"], tests["gt"], dtype)
        if step.packet == "uniform_" and step.prev is None:
            # Small acceptance probability: uniform_(a, b) candidates accepted by comparing the
            # log of a uniform draw with the normal log-density `-((x - mean) / std)**2 / 2 - peak`.
            cond = input_at(wheres[-1], 0)
            if cond is None or cond.step is None or cond.step.packet != "gt":
                return None
            density = input_at(cond.step, 1)
            if density is None or density.step is None:
                return None
            chain = recent_steps(density.step)[0]
            if [c.packet for c in chain] != ["copy_", "sub_", "div_", "pow_", "mul_", "sub_"]:
                return None
            mean, std = call_args(chain[1])[1], call_args(chain[2])[1]
            return trunc_normal_init(mean, std, named_arg(step, "from"), named_arg(step, "to"), dtype)
        return None

    def input_init(self, inp: Input) -> Init:
        """The initialization of a tensor a step reads (the view it reads of its storage included)."""
        init = self.version(inp.step)
        if inp.step is not None and inp.view != inp.step.storage_view:
            where = index_text(inp.view, inp.step.storage_view)
            return Init(init.function, init.params, f"{init.text} {where}", ("view", init.key, inp.view))
        return init

    def _step_text(self, step: Step) -> str:
        """One step as an operator call, its tensor arguments described (nested, capped)."""
        if step.packet == "copy_":
            src = input_at(step, 1)
            if src is not None:
                return self.input_init(src).text
        as_init = self.full_write(step)
        return as_init.text if as_init is not None else call_text(step, lambda inp: self.input_init(inp).text)
