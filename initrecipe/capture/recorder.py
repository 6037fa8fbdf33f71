"""Record what a model constructor does to its tensors, without allocating them: :func:`record`.

This module is the entry point and the attempt loop.  The recording itself is spread over the
modules next to it: :mod:`~initrecipe.capture.dispatch` (every operator the constructor runs under
fake tensors), :mod:`~initrecipe.capture.program_builder` (the program being built),
:mod:`~initrecipe.capture.materializer` (true values, computed when the constructor reads them),
:mod:`~initrecipe.capture.torch_patches` and :mod:`~initrecipe.capture.trunc_normal` (torch made to
treat fake tensors as eager treats real ones), :mod:`~initrecipe.capture.finishing` (the passes
from a finished recording to a recipe's program) and :mod:`~initrecipe.capture.call_site` (where
the model's code called an operator, for errors).
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from dataclasses import dataclass
from typing import Callable

import torch

from initrecipe.capture.dispatch import Recorder, RecordingMode
from initrecipe.capture.finishing import collect_entries, final_states, finish
from initrecipe.capture.findings import uninitialized_message
from initrecipe.capture.materializer import numpy_materializes, sequence_data_materializes
from initrecipe.capture.torch_patches import (device_labels, eager_deepcopy, eager_module_conversion,
                                              fake_lazy_parameters, parameter_class_calls)
from initrecipe.capture.trunc_normal import portable_trunc_normal
from initrecipe.errors import RecordError, UninitializedWarning
from initrecipe.format.recipe import Recipe, TensorEntry
from initrecipe.format.spec import RNG_MODES
from initrecipe.program.ir import Instruction, PortableKey

__all__ = ["record"]

_ACTIVE = threading.local()


def record(
    model_fn: Callable[[], torch.nn.Module],
    *,
    seed: int | None = None,
    rng: str = "torch",
    sync_rng: bool = True,
) -> Recipe:
    """Run ``model_fn`` without allocating tensor storage and capture how it initializes its tensors.

    Args:
        model_fn: a zero-argument callable returning an ``nn.Module``; it runs once, on fake
            tensors that behave like CPU tensors (``is_meta`` is False, ``device`` is ``cpu``).
        seed: seed torch's CPU generator with it first, as ``torch.manual_seed(seed)`` does; None
            records from the generator's current state, so the recipe reproduces what
            ``model_fn()`` would have produced right now.
        rng: ``"torch"``: replay reproduces eager PyTorch on CPU bit for bit.
        sync_rng: leave torch's generators exactly where ``model_fn()`` would have left them, so
            code that draws afterwards is unaffected.  The final states are computed, not drawn
            (``schema/TORCH_RNG.md``): a few milliseconds even for a 7B-parameter model.  With
            False, the generators are put back where they were before ``record``.

    Returns:
        The :class:`Recipe`.

    Raises:
        RecordError: the constructor did something initrecipe cannot capture faithfully.

    Warns:
        UninitializedWarning: some tensors are (fully or partly) written by no instruction, so
            eager and replay give them whatever memory holds; the message names the first few and
            counts the rest, ``recipe.uninitialized_names`` lists them all.  Silence it with
            ``warnings.simplefilter("ignore", initrecipe.UninitializedWarning)`` where that is
            intended (the weights are loaded later).

    Example:
        >>> import initrecipe, torch
        >>> recipe = initrecipe.record(lambda: torch.nn.Linear(4, 2), seed=0)
        >>> recipe.names, recipe.rng
        (['weight', 'bias'], 'torch')

    .. Warning:: while recording, torch's generators hold placeholder states; code inside
       ``model_fn`` that reads ``torch.get_rng_state()`` as data (not to restore it) sees them.
    """
    _check_arguments(model_fn, seed, rng)
    before = _Defaults.now()
    try:
        recipe, left = _record_attempts(model_fn, rng, seed, sync_rng)
    except BaseException:
        before.apply()  # a failed recording changes nothing
        raise
    left.apply()  # as `model_fn()` left them, as eager leaves them
    found = recipe.uninitialized
    if found:
        warnings.warn(uninitialized_message(found), UninitializedWarning, stacklevel=2)
    return recipe


def _check_arguments(model_fn: Callable[[], torch.nn.Module], seed: int | None, rng: str) -> None:
    """Refuse ``record``'s arguments where they are wrong, and a call inside another ``record``."""
    if rng not in RNG_MODES:
        raise RecordError(f"rng must be one of {list(RNG_MODES)}, not {rng!r}")
    if rng == "portable" and (type(seed) is not int or not 0 <= seed < 2**64):
        raise RecordError(
            f"rng='portable' needs an explicit seed in 0 … 2**64-1 (every stream's key derives from it), not {seed!r}"
        )
    if not callable(model_fn):
        raise TypeError(f"model_fn must be a zero-argument callable returning an nn.Module, not {type(model_fn).__name__}")
    if getattr(_ACTIVE, "recording", False):
        raise RecordError("`initrecipe.record` was called inside another `record`; nested recording is not supported")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise TypeError(f"seed must be an int or None, not {type(seed).__name__}")


def _record_attempts(
    model_fn: Callable[[], torch.nn.Module], rng: str, seed: int | None, sync_rng: bool
) -> tuple[Recipe, _Defaults]:
    """Record until the recording is stable (see :data:`_PORTABLE_RECORDINGS`); the recipe and the
    torch defaults ``model_fn`` left.  Every attempt starts from the defaults ``record`` found."""
    before = _Defaults.now()
    known_keys: list[PortableKey | None] | None = None
    for attempt in range(_PORTABLE_RECORDINGS):
        before.apply()
        recorder, program, entries, keys, states, left = _record_once(model_fn, rng, seed, sync_rng, known_keys)
        if not recorder.materializer.read_portable_values and (known_keys is None or keys == known_keys):
            for generator, state in states:
                generator.set_state(state)
            break
        known_keys = keys  # user code read provisional values: record again, computing them with these keys
    else:
        raise RecordError(
            "the constructor reads the values of random tensors while it runs (`.item()`, `bool(...)`, a "
            "boolean mask ...), and with rng='portable' what it reads changes which tensors those values "
            f"end up in, recording after recording ({_PORTABLE_RECORDINGS} tried). Record with rng='torch', "
            "or draw these values from a seeded `torch.Generator`"
        )
    recipe = Recipe(rng=rng, seed=seed, generators=recorder.builder.tracker.count, program=program, tensors=entries)
    return recipe, left


@dataclass(frozen=True)
class _Defaults:
    """torch's process-wide tensor defaults: ``torch.get_default_dtype()`` and the device of
    ``torch.set_default_device`` (None when unset).  A constructor may change them; ``record``
    leaves them as the constructor left them, as running it eagerly does, and computes its own
    tensors under :data:`_PLAIN`."""

    dtype: torch.dtype
    device: torch.device | None

    @staticmethod
    def now() -> _Defaults:
        context = getattr(getattr(torch, "_GLOBAL_DEVICE_CONTEXT", None), "device_context", None)
        device = getattr(context, "device", None)
        return _Defaults(torch.get_default_dtype(), None if device is None else torch.device(device))

    def apply(self) -> None:
        if torch.get_default_dtype() is not self.dtype:
            torch.set_default_dtype(self.dtype)
        if _Defaults.now().device != self.device:
            torch.set_default_device(self.device)


_PLAIN = _Defaults(torch.float32, None)


_PORTABLE_RECORDINGS = 4
"""rng="portable": how many times `record` runs a constructor that reads random values before it
gives up (twice is the rule: once to learn the keys, once to compute what it reads with them)."""


def _record_once(
    model_fn: Callable[[], torch.nn.Module], rng: str, seed: int | None, sync_rng: bool,
    known_keys: list[PortableKey | None] | None,
) -> tuple[Recorder, list[Instruction], list[TensorEntry], list[PortableKey | None],
           list[tuple[torch.Generator, torch.Tensor]], _Defaults]:
    """One recording: the recorder, the compacted program and entries, the keys of the unpinned
    draws by ordinal (rng="portable"; None for a dead draw), and (with ``sync_rng``) the state each
    tracked generator must be left in, and the torch defaults ``model_fn`` left (the process is
    left with :data:`_PLAIN` ones).  The generators are left as they were before."""
    recorder = Recorder(rng, seed, known_keys)
    builder, materializer = recorder.builder, recorder.materializer
    _ACTIVE.recording = True
    finished = False
    try:
        builder.tracker.start(torch.default_generator, seed)
        portable_inits = portable_trunc_normal(builder) if rng == "portable" else contextlib.nullcontext()
        with recorder.fake_mode, RecordingMode(recorder), numpy_materializes(materializer), \
                sequence_data_materializes(materializer), eager_deepcopy(), eager_module_conversion(), \
                device_labels(), fake_lazy_parameters(), parameter_class_calls(), portable_inits:
            model = model_fn()
            if not isinstance(model, torch.nn.Module):
                raise RecordError(f"model_fn returned {type(model).__name__}; it must return an nn.Module")
            entries = collect_entries(builder, model)
        left = _Defaults.now()
        _PLAIN.apply()
        states = final_states(builder) if sync_rng and not materializer.read_portable_values else []
        builder.tracker.restore_originals()
        finished = True
    finally:
        _ACTIVE.recording = False
        if not finished:
            builder.tracker.restore_originals()
    program, entries, keys = finish(builder, entries)
    return recorder, program, entries, keys, states, left
