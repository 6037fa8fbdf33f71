"""Reading a storage version's history (the :class:`~initrecipe.analysis.lineage.Step` chain the
lineage builds): the steps since its last full write, a step's arguments by schema position and
its tensor inputs, and whether a view shows all of a storage."""

from __future__ import annotations

from typing import Any

from initrecipe.analysis.lineage import Input, Step, View
from initrecipe.program.ir import Call
from initrecipe.program.operators import op_info

__all__ = ["CHAIN_LIMIT", "recent_steps", "as_covering", "call_args", "named_arg", "input_at", "same_elements"]

CHAIN_LIMIT = 64  # steps of one storage looked at; longer histories are shown as their last steps


def recent_steps(step: Step) -> tuple[list[Step], int]:
    """The steps since the last full write, oldest first (at most the last :data:`CHAIN_LIMIT`), and
    how many older ones were left out."""
    steps: list[Step] = []
    s: Step | None = step
    while s is not None and len(steps) < CHAIN_LIMIT:
        steps.append(s)
        s = s.prev
    hidden = 0
    while s is not None:
        hidden += 1
        s = s.prev
    steps.reverse()
    return steps, hidden


def as_covering(step: Step) -> Step:
    """The same step as if it wrote all of its storage (to describe a partial write by its op)."""
    if step.covers:
        return step
    clone = Step(step.index, step.ins, step.out, step.view, step.view, None, step.inputs, step.draw)
    clone.init_id = step.init_id
    return clone


def call_args(step: Step) -> list[Any]:
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


def named_arg(step: Step, name: str) -> Any:
    """A call's argument ``name`` (its default when not given); None when the schema has none."""
    ins = step.ins
    assert isinstance(ins, Call)
    info = op_info(ins.op)
    if name not in info.arg_names:
        return None
    return call_args(step)[info.arg_names.index(name)]


def input_at(step: Step, position: int) -> Input | None:
    """The tensor input at schema ``position`` of a step, if any."""
    for inp in step.inputs:
        if inp.position == position:
            return inp
    return None


def _contiguous(view: View) -> bool:
    expected = 1
    for size, stride in reversed(list(zip(view.shape, view.stride))):
        if size != 1 and stride != expected:
            return False
        expected *= size
    return True


def same_elements(view: View, whole: View) -> bool:
    """Whether ``view`` shows all of ``whole``'s elements in the same order (a reshape)."""
    return (view.dtype == whole.dtype and view.offset == whole.offset and view.numel == whole.numel
            and _contiguous(view) and _contiguous(whole))
