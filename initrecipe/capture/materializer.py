"""Materialize on read: the true value of a fake tensor when the constructor reads it (``.item()``,
``bool(t)``, ``t.numpy()``, a list of tensors given to ``torch.tensor``), computed by running just
the slice of the program it depends on, with a cache of values already computed."""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch._subclasses.fake_tensor import FakeTensor
from torch.utils._python_dispatch import _disable_current_modes

from initrecipe.analysis.facts import Action
from initrecipe.analysis.plan import plan_execution
from initrecipe.capture.program_builder import ProgramBuilder, with_key
from initrecipe.errors import RecordError
from initrecipe.program.ir import Instruction, PortableKey
from initrecipe.runtime.interpreter import execute
from initrecipe.runtime.rng_modes import PortableContext

__all__ = ["Materializer", "numpy_materializes", "sequence_data_materializes"]

_CACHE_BUDGET = 1 << 30  # bytes of materialized values the recorder keeps for data-dependent code


class Materializer:
    """The true values of a recording's fake tensors, computed on demand from the program so far."""

    def __init__(self, builder: ProgramBuilder, seed: int | None, known_keys: list[PortableKey | None] | None) -> None:
        self.builder = builder
        self.seed = seed
        # rng="portable": the keys of the unpinned draws by ordinal, from an earlier recording of
        # the same constructor, so that values the constructor reads can be computed as replay
        # will compute them (see `record`); None in a first recording.
        self.known_keys = known_keys
        self.read_portable_values = False  # a first recording gave user code provisional values
        self.cache: OrderedDict[int, tuple[torch.Tensor, int]] = OrderedDict()
        self.cache_bytes = 0

    def materialize(self, tensor: torch.Tensor) -> torch.Tensor:
        """The real value ``tensor`` holds at this point of the constructor."""
        if not isinstance(tensor, FakeTensor):
            return tensor
        return self.value_at(self.builder.ref(tensor).id, len(self.builder.program))

    def value_at(self, vid: int, end: int) -> torch.Tensor:
        """The real value of value ``vid`` right after instruction ``end - 1``."""
        available = {s: as_of for s, (_, as_of) in self.cache.items() if as_of < end}
        offered = dict(available)
        actions = plan_execution(self.builder.program, self.builder.facts, [vid], end=end, advance_dead_draws=False,
                                 available=available)
        if self.builder.unreplayable:
            self.builder.refuse_if_unreplayable((i for i, a in enumerate(actions) if a == Action.RUN),
                                                "the constructor reads values computed from its result while it runs")
        program: list[Instruction] = self.builder.program
        portable: PortableContext | None = None
        if self.builder.rng == "portable":
            reads = [i for i, a in enumerate(actions) if a == Action.RUN and self.builder.is_portable_draw(i)]
            if reads and self.known_keys is None:
                # A portable draw's values depend on the name of the tensor they end up in, known
                # only once the model is built: go on with provisional values (torch's), and let
                # `record` record again with the keys this recording finds.
                self.read_portable_values = True
            elif reads:
                assert self.seed is not None
                program = list(self.builder.program)
                for i in reads:
                    program[i] = with_key(program[i], self._known_key(i))
                portable = PortableContext(self.seed)
        env: dict[int, torch.Tensor] = {s: self.cache[s][0] for s in available}
        with _disable_current_modes(), torch.no_grad(), torch._C.DisableTorchFunction():
            for _ in execute(program, self.builder.facts, actions, env, self.builder.shadow, portable=portable):
                pass
        result = env[vid]
        self._update_cache(env, actions, offered, available, end)
        return result

    def _known_key(self, index: int) -> PortableKey:
        """The stream of unpinned draw ``index`` as the previous recording keyed it (a stand-in
        for a draw that recording found dead: any fixed key does, its values reach no tensor)."""
        ordinal = self.builder.draw_ordinal[index]
        known = self.known_keys or []
        key = known[ordinal] if ordinal < len(known) else None
        return key if key is not None else PortableKey(f"initrecipe.unkeyed.{ordinal}", 0)

    def _update_cache(
        self,
        env: dict[int, torch.Tensor],
        actions: list[Action],
        offered: dict[int, int],
        used: dict[int, int],
        end: int,
    ) -> None:
        """Keep the storages computed for a read that are complete as of ``end`` (``offered``: those
        the cache offered the plan, ``used``: those it used), within the cache's budget."""
        for sid in list(env):
            facts = self.builder.facts
            if sid not in self.builder.writers or facts.values.get(sid) is None or facts.values[sid].storage != sid:
                continue
            since = used.get(sid, -1)
            complete = all(actions[w] == Action.RUN for w in self.builder.writers[sid] if since < w < end)
            if sid in offered and sid not in used:
                # The plan recomputed it from scratch: keep the fresh copy only if it is complete.
                complete = all(actions[w] == Action.RUN for w in self.builder.writers[sid] if w < end)
            old = self.cache.pop(sid, None)
            if old is not None:
                self.cache_bytes -= old[0].untyped_storage().nbytes()
            if complete:
                tensor = env[sid]
                self.cache[sid] = (tensor, end - 1)
                self.cache_bytes += tensor.untyped_storage().nbytes()
        while self.cache_bytes > _CACHE_BUDGET and self.cache:
            _, (tensor, _) = self.cache.popitem(last=False)
            self.cache_bytes -= tensor.untyped_storage().nbytes()

    def run_value_dependent(self, index: int) -> None:
        """Run random call ``index``, whose draw count depends on the values of its inputs
        (``poisson``), for real: compute its inputs and draw, so later generator states are known."""
        ins = self.builder.program[index]
        out = next((o for o in ins.outs if o is not None), None)
        if out is None:  # pragma: no cover - value-dependent random operators return a tensor
            raise RecordError(f"random operator `{ins.op}` returns no tensor; initrecipe cannot run it")
        self.value_at(out, index + 1)

    def remember(self, vid: int, real: torch.Tensor, index: int) -> None:
        """Cache ``real``, the value of ``vid`` computed for real right after instruction ``index``."""
        self.cache[vid] = (real, index)
        self.cache_bytes += real.untyped_storage().nbytes()


@contextlib.contextmanager
def numpy_materializes(materializer: Materializer) -> Iterator[None]:
    """Let ``tensor.numpy()`` (and so ``np.asarray(tensor)``) return true values while recording."""
    original = torch.Tensor.numpy

    def numpy(self: torch.Tensor, *args: Any, **kwargs: Any) -> np.ndarray:
        if isinstance(self, FakeTensor):
            real = materializer.materialize(self)
            with _disable_current_modes():
                return original(real.detach(), *args, **kwargs)
        return original(self, *args, **kwargs)

    torch.Tensor.numpy = numpy  # type: ignore[method-assign]
    try:
        yield
    finally:
        torch.Tensor.numpy = original  # type: ignore[method-assign]


def _holds_fake(data: list | tuple) -> bool:
    """Whether a (nested) list or tuple holds a fake tensor."""
    return any(isinstance(d, FakeTensor) or (isinstance(d, (list, tuple)) and _holds_fake(d)) for d in data)


@contextlib.contextmanager
def sequence_data_materializes(materializer: Materializer) -> Iterator[None]:
    """Let ``torch.tensor``/``torch.as_tensor``/``Tensor.new_tensor`` read tensors inside lists.

    Given a list of tensors (``torch.tensor([f * 2 for f in freqs])``, as torchtune's Llama 3.1
    RoPE scaling does), torch reads each element's memory directly, below the dispatcher, which
    fake tensors do not have.  While recording, the fake elements of such a list are replaced by
    their true values, computed on demand as for ``.item()``; the new tensor is then a constant,
    exactly as eager builds it.
    """

    def real(data: object) -> object:
        if isinstance(data, FakeTensor):
            return materializer.materialize(data)
        if isinstance(data, (list, tuple)):
            return type(data)(real(d) for d in data)
        return data

    def reading(original: Callable[..., torch.Tensor], position: int) -> Callable[..., torch.Tensor]:
        def wrapper(*args: Any, **kwargs: Any) -> torch.Tensor:
            data = args[position] if len(args) > position else kwargs.get("data")
            if isinstance(data, (list, tuple)) and _holds_fake(data):
                if len(args) > position:
                    args = args[:position] + (real(data),) + args[position + 1:]
                else:
                    kwargs = dict(kwargs, data=real(data))
            return original(*args, **kwargs)

        return wrapper

    originals = (torch.tensor, torch.as_tensor, torch.Tensor.new_tensor)
    # `with torch.device(...)` finds factories in a set it builds and caches on first use; build
    # it now, from torch's own functions, not from the wrappers below (a set built while they are
    # installed would hold them, and the device context would ignore `torch.tensor` for good).
    constructors = getattr(getattr(torch.utils, "_device", None), "_device_constructors", None)
    if constructors is not None:
        constructors()
    torch.tensor = reading(originals[0], 0)  # type: ignore[assignment]
    torch.as_tensor = reading(originals[1], 0)  # type: ignore[assignment]
    torch.Tensor.new_tensor = reading(originals[2], 1)  # type: ignore[method-assign]
    try:
        yield
    finally:
        torch.tensor, torch.as_tensor, torch.Tensor.new_tensor = originals  # type: ignore[misc]

