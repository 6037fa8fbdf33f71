"""How :class:`~initrecipe.analysis.describe.Describer` writes what it shows as text: where a view
lies in its storage (``[3]``, ``[:, 0:16]``), and a step it does not recognise as an operator call
(``mul(reciprocal(pow(10000.0, ...)), 1.0)``), each capped at :data:`TEXT_LIMIT` characters."""

from __future__ import annotations

from typing import Callable

import torch

from initrecipe.analysis.lineage import Input, Step, View
from initrecipe.program.ir import Call, GenRef, PortableKey, Ref
from initrecipe.program.operators import op_info
from initrecipe.support.display import dtype_text, number, shape_text

__all__ = ["TEXT_LIMIT", "shorten", "index_text", "call_text"]

TEXT_LIMIT = 240  # characters of an operator-chain description

_HIDDEN_KWARGS = frozenset({"device", "pin_memory", "layout", "memory_format", "generator", "dtype",
                            "requires_grad", "non_blocking"})


def shorten(text: str) -> str:
    """``text``, cut to :data:`TEXT_LIMIT` characters (ending in ``...``)."""
    return text if len(text) <= TEXT_LIMIT else text[: TEXT_LIMIT - 3] + "..."


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


def call_text(step: Step, input_text: Callable[[Input], str]) -> str:
    """One step as an operator call, its tensor arguments shown by ``input_text`` (capped)."""
    ins = step.ins
    if not isinstance(ins, Call):
        return "literal"
    info = op_info(ins.op)
    packet = step.packet
    by_position: dict[int | str, list[Input]] = {}
    for inp in step.inputs:
        by_position.setdefault(inp.position, []).append(inp)
    in_place = bool(info.written_args) and 0 in info.written_args

    def render(value: object, pos: int | str) -> str | None:
        if isinstance(value, Ref):
            queue = by_position.get(pos)
            if not queue:
                return None  # the written tensor itself
            return shorten(input_text(queue.pop(0)))
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
    return shorten(f"{packet}({', '.join(shown)})")
