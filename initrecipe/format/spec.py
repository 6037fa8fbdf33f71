"""The recipe format's constants: its name and versions, instruction codes, the tagged values it
knows, and the limits on what a file may hold (see ``schema/FORMAT.md``)."""

from __future__ import annotations

from typing import Sequence

import torch

from initrecipe.program.ir import Call, Instruction, PortableKey
from initrecipe.program.operators import FORMAT_1_2_DRAWS

FORMAT_NAME = "initrecipe"
FORMAT_VERSION: tuple[int, int] = (1, 2)
"""The newest format version this initrecipe reads and writes.  Writers use the lowest version
whose rules a recipe follows: 1.0 for ``torch`` recipes, 1.1 (which adds ``portable``) for portable
ones, 1.2 for portable ones that key a draw format 1.2 added (``cauchy_``, ``multinomial``, ...)."""
RNG_MODES = ("torch", "portable")
PORTABLE_SINCE = (1, 1)
"""The format version that added ``rng='portable'``."""
NEW_DRAWS_SINCE = (1, 2)
"""The format version that added the portable draws of ``FORMAT_1_2_DRAWS``."""

# The initrecipe release that introduced each format version: what to tell a user whose reader is older.
FIRST_READER = {(1, 0): "0.1.0", (1, 1): "0.2.0", (1, 2): "0.3.0"}

# The instruction codes (the first field of each program item), the tensor kinds, and the layouts
# and memory formats a tagged argument may name.
OP_CALL, OP_LITERAL, OP_SEED, OP_SET_STATE, OP_RESTORE = range(5)
TENSOR_KINDS = ("parameter", "buffer")
LAYOUTS = {"strided": torch.strided}
MEMORY_FORMATS = {
    "contiguous_format": torch.contiguous_format,
    "preserve_format": torch.preserve_format,
    "channels_last": torch.channels_last,
    "channels_last_3d": torch.channels_last_3d,
}
TOP_LEVEL_KEYS = ("format", "version", "rng", "seed", "generators", "ops", "program", "tensors", "producer")

# Limits on what a recipe file may hold.  Each is far above what any real model needs; together
# they bound the memory and time that reading an arbitrary (corrupt or hostile) file can cost.
MAX_INSTRUCTIONS = 10_000_000
"""Most program instructions a recipe may hold."""
MAX_TENSORS = 1_000_000
"""Most tensor entries (names) a recipe may hold."""
MAX_OPERATOR_NAMES = 65_536
"""Most distinct operator names in the ``ops`` table."""
MAX_GENERATORS = 4_096
"""Most random generators a recipe may declare (replay creates each one)."""
MAX_STRING_CHARS = 65_536
"""Longest string (a tensor name, an operator name, a string argument)."""
MAX_LIST_ITEMS = 1_000_000
"""Longest list inside an instruction's arguments."""
MAX_ARG_DEPTH = 8
"""Deepest nesting of lists inside one argument."""
MAX_DIMS = 64
"""Most dimensions of one tensor."""
MAX_ID = 2**63 - 1
"""Largest tensor value id."""
RNG_STATE_BYTES = 5056
"""Size of a torch CPU generator state (``len(torch.Generator().get_state())``: mt19937 plus normal-sampling caches)."""

MAX_FILE_BYTES = 4 << 30
"""Largest recipe file (literals included); real recipes are kilobytes to megabytes."""
MAX_BYTES_PER_TENSOR = 2**63 - 1  # torch sizes are int64


def format_version_for(rng: str, program: Sequence[Instruction] = ()) -> tuple[int, int]:
    """The format version a writer records for a recipe in ``rng`` mode with ``program`` (the
    lowest that has what it uses): 1.0 for ``torch``, 1.1 for ``portable``, 1.2 for a portable
    program that keys a draw of :data:`initrecipe.program.operators.FORMAT_1_2_DRAWS`."""
    if rng != "portable":
        return (1, 0)
    return NEW_DRAWS_SINCE if first_new_draw(program) is not None else PORTABLE_SINCE


def first_new_draw(program: Sequence[Instruction]) -> tuple[int, str] | None:
    """(index, operator) of the first portable draw that format 1.2 added, or None."""
    for i, ins in enumerate(program):
        if isinstance(ins, Call) and ins.op in FORMAT_1_2_DRAWS and any(
            isinstance(a, PortableKey) for a in (*ins.args, *ins.kwargs.values())
        ):
            return i, ins.op
    return None
