"""Where a ``portable`` replay on an accelerator runs each operator, so that its bits equal the CPU's.

A portable recipe replayed with ``device="cuda"`` builds its tensors on that device.  Operators
whose every output element is one correctly rounded IEEE operation, a copy or a comparison give
the same bits on every device (:data:`initrecipe.program.operators.DEVICE_EXACT`), and so do portable draws and the portable
substitutes (``erfinv``, QR).  Every other operator — transcendental functions (``pow``, ``exp``,
``sin``), ``sqrt`` (torch's CPU kernel is not correctly rounded: off by one ulp for ~15% of
float32 inputs), reductions, products, division by a scalar (CUDA multiplies by the reciprocal),
draws from a pinned ``torch.Generator`` — runs on the CPU on copies of its inputs, and its results
are copied back to the device.  In a model's init program those are small buffers (rotary frequencies,
position tables) and rare inits, so nearly all bytes are generated on the device.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from initrecipe.program.ir import Call
from initrecipe.program.operators import DEVICE_EXACT, DEVICE_EXACT_WITH_UNIT_ALPHA
from initrecipe.program.walk import map_arg

__all__ = ["runs_on_device", "on_device", "run_on_host"]

_CPU = torch.device("cpu")


def runs_on_device(ins: Call) -> bool:
    """Whether a (deterministic, generator-free) call gives the same bits on the device as on the CPU."""
    packet = ins.op.split(".")[1]
    if packet in DEVICE_EXACT_WITH_UNIT_ALPHA:
        # `a + alpha * b` may be fused into one multiply-add on one device and not on another.
        alpha = ins.kwargs.get("alpha", ins.args[2] if len(ins.args) > 2 else 1)
        return alpha in (1, -1) and not isinstance(alpha, bool)
    return packet in DEVICE_EXACT


def on_device(value: object, device: torch.device) -> Any:
    """An argument with every ``torch.device`` in it replaced by ``device`` (factories create there)."""
    return map_arg(value, torch.device, lambda _: device)


def _on_host(leaf: torch.Tensor | torch.device) -> torch.Tensor | torch.device:
    return leaf.cpu() if isinstance(leaf, torch.Tensor) else _CPU


def _host(value: object) -> Any:
    """An argument with its tensors copied to the CPU and its devices replaced by the CPU."""
    return map_arg(value, (torch.Tensor, torch.device), _on_host)


def run_on_host(run: Callable[[list[Any], dict[str, Any]], Any], args: list[Any], kwargs: dict[str, Any],
                written: tuple[int, ...], device: torch.device) -> Any:
    """Run ``run(args, kwargs)`` on CPU copies of the tensor arguments and bring the results to ``device``.

    Arguments at the positions ``written`` (in-place and ``out=`` targets) receive what the CPU
    run wrote into their copies; an output that is such an argument is returned as the original.
    """
    host_args = [_host(a) for a in args]
    host_kwargs = {k: _host(v) for k, v in kwargs.items()}
    result = run(host_args, host_kwargs)
    originals: dict[int, torch.Tensor] = {}
    for pos in written:
        if pos < len(args) and isinstance(args[pos], torch.Tensor):
            args[pos].copy_(host_args[pos])
            originals[id(host_args[pos])] = args[pos]
    return _back_to_device(result, originals, device)


def _back_to_device(value: object, originals: dict[int, torch.Tensor], device: torch.device) -> Any:
    """``value`` with host tensors moved to ``device`` (written arguments map back to their originals).
    Module-level, not a recursive closure: that would be a reference cycle holding tensors."""
    return map_arg(value, torch.Tensor, lambda t: originals[id(t)] if id(t) in originals else t.to(device))
