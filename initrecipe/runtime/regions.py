"""Regions of a tensor a replay can be asked for: a :class:`Shard` (a slice of one dimension), a
:class:`Box` (a block over every dimension), a :data:`ShardRequest` naming them per tensor, and the
runs of row-major elements a region selects (:func:`segments_of`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Union

import torch

from initrecipe.errors import ReplayError

__all__ = ["Shard", "Box", "ShardRequest", "segments_of"]


@dataclass(frozen=True, slots=True)
class Shard:
    """The slice ``start:stop`` of dimension ``dim`` of a tensor."""

    dim: int
    start: int
    stop: int

    @classmethod
    def of(cls, size: int, rank: int, world_size: int, dim: int = 0) -> "Shard":
        """Rank ``rank``'s part of a dimension of ``size`` split ``world_size`` ways as
        ``torch.chunk`` (and FSDP2) split it: chunks of ``ceil(size / world_size)``, the last ones
        shorter or empty."""
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank must be in 0 … world_size-1 and world_size >= 1, found rank={rank}, world_size={world_size}")
        chunk = -(-size // world_size) if size else 0
        start = min(rank * chunk, size)
        return cls(dim, start, min(start + chunk, size))

    def checked(self, name: str, shape: tuple[int, ...]) -> "Shard":
        """This shard with a negative ``dim`` resolved; :class:`ReplayError` if it does not fit ``shape``."""
        ndim = len(shape)
        dim = self.dim + ndim if self.dim < 0 else self.dim
        if not 0 <= dim < ndim:
            raise ReplayError(f"shard of `{name}`: dim {self.dim} is out of range for a tensor of shape {list(shape)}")
        if not 0 <= self.start <= self.stop <= shape[dim]:
            raise ReplayError(
                f"shard of `{name}`: [{self.start}:{self.stop}] is not a slice of dimension {dim} "
                f"(size {shape[dim]}); need 0 <= start <= stop <= size"
            )
        return Shard(dim, self.start, self.stop)

    def shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The shape of this slice of a tensor of ``shape``."""
        return shape[: self.dim] + (self.stop - self.start,) + shape[self.dim + 1 :]


@dataclass(frozen=True, slots=True)
class Box:
    """The block ``starts[d]:stops[d]`` of every dimension ``d`` of a tensor: what one rank holds
    of a tensor sharded over several dimensions of a device mesh (rows from one, columns from
    another).  A :class:`Shard` is the box that spans every other dimension.

    Example:
        >>> import torch
        >>> from initrecipe import Box
        >>> Box((1, 2), (3, 5)).take(torch.arange(24).reshape(4, 6))
        tensor([[ 8,  9, 10],
                [14, 15, 16]])
    """

    starts: tuple[int, ...]
    stops: tuple[int, ...]

    @classmethod
    def of(cls, region: "Shard | Box", shape: tuple[int, ...]) -> "Box":
        """``region`` as a box of a tensor of ``shape`` (a :class:`Shard` spans the other dimensions)."""
        if isinstance(region, Box):
            return region
        starts, stops = [0] * len(shape), list(shape)
        starts[region.dim], stops[region.dim] = region.start, region.stop
        return cls(tuple(starts), tuple(stops))

    def checked(self, name: str, shape: tuple[int, ...]) -> "Box":
        """This box, or :class:`ReplayError` if it does not fit ``shape``."""
        starts, stops = tuple(int(s) for s in self.starts), tuple(int(s) for s in self.stops)
        if len(starts) != len(shape) or len(stops) != len(shape):
            raise ReplayError(
                f"box of `{name}`: {len(starts)} starts and {len(stops)} stops for a tensor of shape {list(shape)}"
            )
        for d, (a, b, size) in enumerate(zip(starts, stops, shape)):
            if not 0 <= a <= b <= size:
                raise ReplayError(
                    f"box of `{name}`: [{a}:{b}] is not a slice of dimension {d} (size {size}); need 0 <= start <= stop <= size"
                )
        return Box(starts, stops)

    def shape(self, shape: tuple[int, ...] = ()) -> tuple[int, ...]:
        """The shape of the block."""
        return tuple(b - a for a, b in zip(self.starts, self.stops))

    def take(self, tensor: torch.Tensor) -> torch.Tensor:
        """The block of ``tensor`` (a view)."""
        return tensor[tuple(slice(a, b) for a, b in zip(self.starts, self.stops))]

    def is_whole(self, shape: tuple[int, ...]) -> bool:
        """Whether the block is the whole of a tensor of ``shape``."""
        return all(a == 0 and b == size for a, b, size in zip(self.starts, self.stops, shape))


ShardRequest = Union[Mapping[str, Union[Shard, Box]], Callable[[str, tuple[int, ...]], Union[Shard, Box, None]], None]
"""Which part of which tensor: a mapping name -> :class:`Shard` or :class:`Box`, or a callable
``(name, shape) -> Shard | Box | None`` (None: the whole tensor)."""


def segments_of(shape: tuple[int, ...], region: Shard | Box) -> list[tuple[int, int]]:
    """The region's elements as ``(first row-major index, length)`` runs of the whole tensor, in
    row-major order of the region."""
    box = Box.of(region, shape)
    ndim = len(shape)
    if ndim == 0:
        return [(0, 1)]
    if any(b <= a for a, b in zip(box.starts, box.stops)):
        return []
    strides = [1] * ndim
    for d in range(ndim - 2, -1, -1):
        strides[d] = strides[d + 1] * shape[d + 1]
    # The innermost dimensions the box spans whole merge into one run with the first partial one.
    inner = ndim - 1
    while inner > 0 and box.starts[inner] == 0 and box.stops[inner] == shape[inner]:
        inner -= 1
    length = (box.stops[inner] - box.starts[inner]) * strides[inner]
    outer_ranges = [range(box.starts[d], box.stops[d]) for d in range(inner)]
    base = box.starts[inner] * strides[inner]
    runs = [(base, length)]
    for d in range(inner - 1, -1, -1):
        runs = [(start + i * strides[d], n) for i in outer_ranges[d] for start, n in runs]
    if len(runs) > 1 and all(runs[k][0] + runs[k][1] == runs[k + 1][0] for k in range(len(runs) - 1)):
        return [(runs[0][0], sum(n for _, n in runs))]
    return runs
