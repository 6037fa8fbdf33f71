"""The vocabulary of the operator registry: what kinds of facts an operator declaration states.

Every per-operator fact is data here.  A fact whose implementation lives in a higher layer names
its rule with an enum member (plus its parameters); that layer keeps one mapping from rule to
implementation: :class:`Precondition` in :mod:`initrecipe.analysis.preconditions`, :class:`DrawRule` in
:mod:`initrecipe.rng.torch.draw_costs`, :class:`Substitute` and :class:`PortableSampler` in
:mod:`initrecipe.rng.portable.semantics`, :class:`CostFamily` in :mod:`initrecipe.analysis.cost`,
:class:`Constant` in :mod:`initrecipe.analysis.describe` and :mod:`initrecipe.runtime.sharding`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["Kind", "Precondition", "DrawRule", "DrawCostRule", "NOT_MODELLED", "CostFamily", "Constant",
           "DeviceExact", "Substitute", "RecordShortcut", "PortableSampler", "Overload", "Operator"]


class Kind(enum.Enum):
    """What an operator does, as the allowlist groups it (``schema/FORMAT.md``)."""

    FACTORY = "factory"  # creates a tensor (or copies one)
    RANDOM = "random"  # draws from a generator
    VIEW = "view"  # aliases its input
    POINTWISE = "pointwise"  # elementwise arithmetic, comparisons and fills
    STRUCTURAL = "structural"  # indexing, reductions, linear algebra, layout


class Precondition(enum.Enum):
    """A check of the arguments that meta kernels skip and replay's kernels make (analysis.preconditions)."""

    WEIGHT_NORM = "weight_norm"
    ROUND = "round"
    RANDOM_BOUNDS = "random_bounds"  # random/random_: `from`/`to` into the dtype
    RANDINT_BOUNDS = "randint_bounds"  # randint/randint_like: `low`/`high` into the dtype


class DrawRule(enum.Enum):
    """How many outputs of torch's CPU generator a random operator takes (rng.torch.draw_costs)."""

    UNIFORM = "uniform"
    NORMAL = "normal"
    RANDOM = "random"
    TWO_PER_ELEMENT = "two_per_element"
    LOG_NORMAL = "log_normal"
    BERNOULLI = "bernoulli"
    RANDPERM = "randperm"
    MULTINOMIAL = "multinomial"
    NOT_MODELLED = "not_modelled"  # replay runs torch's kernel to advance the generator


@dataclass(frozen=True, slots=True)
class DrawCostRule:
    """A random operator's draw-cost ``rule`` and the ``family`` of probes that must trust it."""

    rule: DrawRule
    family: str | None = None


NOT_MODELLED = DrawCostRule(DrawRule.NOT_MODELLED)
"""The draw-cost rule of a random operator outside the consumption model (``schema/TORCH_RNG.md``)."""


class CostFamily(enum.Enum):
    """How the work estimate (analysis.cost) prices an operator beyond its memory traffic."""

    NO_DATA = "no_data"  # allocates or aliases: no data is written
    TRANSCENDENTAL = "transcendental"
    INDEXING = "indexing"
    SORTING = "sorting"
    SEARCHING = "searching"
    SCAN = "scan"
    MATMUL = "matmul"
    EINSUM = "einsum"
    QR = "qr"
    SVD = "svd"
    EIGH = "eigh"
    CHOLESKY = "cholesky"
    SOLVE = "solve"


class Constant(enum.Enum):
    """The value every element of an operator's result holds when it has no tensor input to read."""

    EMPTY = "empty"  # uninitialized
    ZEROS = "zeros"
    ONES = "ones"
    FULL = "full"  # its `fill_value`/`value` argument


class DeviceExact(enum.Enum):
    """Whether an operator gives the same bits on every device (runtime.placement)."""

    NO = "no"
    YES = "yes"
    UNIT_ALPHA = "unit_alpha"  # `a + alpha * b`: only with alpha 1 or -1 (no fused multiply-add)


class Substitute(enum.Enum):
    """A deterministic operator whose portable meaning is initrecipe's own (rng.portable.semantics)."""

    ERFINV = "erfinv"
    ERFINV_INPLACE = "erfinv_"
    QR = "qr"
    GEQRF = "geqrf"
    HOUSEHOLDER_PRODUCT = "householder_product"


class RecordShortcut(enum.Enum):
    """A call the recorder answers without a FakeTensorMode dispatch (capture.recorder)."""

    META_FACTORY = "meta_factory"  # a CPU factory: made on meta and wrapped
    SCALAR_FILL = "scalar_fill"  # an in-place fill with scalar arguments: returns its self


@dataclass(frozen=True, slots=True)
class PortableSampler:
    """How a portable random call reads its sampler and parameters (``schema/PORTABLE_RNG.md``).

    ``kind``: the sampler (:data:`initrecipe.rng.portable.samplers.SAMPLERS`, ``permutation`` or
    ``multinomial``); ``params``: each a schema argument name (read from the call) or a constant;
    ``since``: the format version that introduced the draw; ``elementwise``: whether element ``i``
    depends on its own index only (a permutation's does not).
    """

    kind: str
    params: tuple[str | int | float, ...]
    since: tuple[int, int] = (1, 1)
    elementwise: bool = True


@dataclass(frozen=True, slots=True)
class Overload:
    """Facts about one overload of an operator.

    ``generator``: for an overload that draws from the global generator, the overload that takes
    an explicit one (the recorder records that); ``sampler``/``refused``: its portable sampler, or
    why portable recipes refuse it; ``substitute``: its portable meaning; ``chunk_granule``: for
    a fill that may be drawn chunk by chunk into a small buffer, the granule in elements.
    """

    name: str
    generator: str | None = None
    sampler: PortableSampler | None = None
    refused: str | None = None
    substitute: Substitute | None = None
    chunk_granule: int | None = None
    shortcut: RecordShortcut | None = None


@dataclass(frozen=True, slots=True)
class Operator:
    """Everything initrecipe knows about one ATen operator (by name, without overload).

    ``overwrites``: an in-place operator that overwrites every element of its first argument
    without reading it; ``shape_only``: reads only the shape, dtype and device of its tensor
    arguments; ``uninitialized``: its result is fresh memory nothing has written;
    ``value_dependent_draw``: a draw whose consumption of the generator may depend on the values
    of its tensor inputs; ``data_dependent_shape``: its output shape depends on input values;
    ``copies``: its result is a copy of its input; ``elementwise``: a slice of its result needs
    only the same slice of its inputs (runtime.sharding).
    """

    name: str
    kind: Kind
    overwrites: bool = False
    shape_only: bool = False
    uninitialized: bool = False
    value_dependent_draw: bool = False
    data_dependent_shape: bool = False
    copies: bool = False
    elementwise: bool = False
    constant: Constant | None = None
    device_exact: DeviceExact = DeviceExact.NO
    precondition: Precondition | None = None
    draws: DrawCostRule | None = None
    cost: CostFamily | None = None
    overloads: tuple[Overload, ...] = ()
