"""Where the constructor called an operator, for the recorder's error messages: the first frame
outside initrecipe and torch's internals, and the model's own frame behind torch's."""

from __future__ import annotations

import os
import sys

import torch

__all__ = ["call_context", "call_site"]

_INTERNAL_FILES = (  # initrecipe itself and torch's private machinery (dispatch, fake tensors)
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep,  # the whole package
    os.path.join(os.path.dirname(os.path.abspath(torch.__file__)), "_"),
    os.path.join(os.path.dirname(os.path.abspath(torch.__file__)), "utils", "_"),
)
_TORCH_FILES = os.path.join(os.path.dirname(os.path.abspath(torch.__file__)), "")


def call_context(args: tuple, kwargs: dict) -> str:
    """`` (on tensors of shape ..., called from `file:line` in `fn`)``: where an operator the
    recorder refuses was called, for the error to name."""
    tensors = [a for a in [*args, *kwargs.values()] if isinstance(a, torch.Tensor)]
    tensors += [t for a in [*args, *kwargs.values()] if isinstance(a, (list, tuple)) for t in a
                if isinstance(t, torch.Tensor)]
    shapes = [f"{list(t.shape)} {str(t.dtype).removeprefix('torch.')}" for t in tensors]
    parts = [f"on tensors of shape {', '.join(shapes[:3])}{' ...' if len(shapes) > 3 else ''}"] if shapes else []
    site = call_site()
    if site:
        parts.append(site)
    return f" ({', '.join(parts)})" if parts else ""


def call_site() -> str:
    """``called from `file:line` in `fn` ``: the innermost frame outside initrecipe and torch's
    internals, and, when that frame is torch's own (``nn.functional``, a module's ``forward``),
    the first frame outside torch, the model's code (``, reached from `file:line` in `fn` ``)."""
    frame = sys._getframe(1)
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_INTERNAL_FILES):
        frame = frame.f_back
    if frame is None:  # pragma: no cover - a constructor always has a frame of its own
        return ""
    site = f"called from `{frame.f_code.co_filename}:{frame.f_lineno}` in `{frame.f_code.co_name}`"
    outer = frame
    while outer is not None and os.path.abspath(outer.f_code.co_filename).startswith((_TORCH_FILES, _INTERNAL_FILES[0])):
        outer = outer.f_back
    if outer is not None and outer is not frame:
        site += f", reached from `{outer.f_code.co_filename}:{outer.f_lineno}` in `{outer.f_code.co_name}`"
    return site

