"""initrecipe: a model's initial weights as a recipe of kilobytes, not a checkpoint of gigabytes.

Example:
    >>> import initrecipe, torch
    >>> recipe = initrecipe.record(lambda: torch.nn.Linear(4, 2), seed=0)
    >>> weights = initrecipe.replay(recipe)
    >>> sorted(weights)
    ['bias', 'weight']
"""

from initrecipe import errors
from initrecipe._version import __version__
from initrecipe.errors import (
    CheckpointError,
    MemoryLimitError,
    OutputExistsError,
    OutputWriteError,
    RecipeError,
    RecipeFormatError,
    RecipeIntegrityError,
    RecipeWarning,
    RecordError,
    ReplayError,
    ResourceLimitError,
    SettingError,
    UninitializedWarning,
    UnsupportedVersionError,
    UnverifiedTorchWarning,
    WorkLimitError,
)
from initrecipe.format.decode import load
from initrecipe.format.recipe import Recipe, TensorEntry
from initrecipe.runtime.replay import iter_replay, replay, sliceable, sliceable_names
from initrecipe.runtime.regions import Box, Shard
from initrecipe.export.convert import to_safetensors
from initrecipe.inspect.diff import diff
from initrecipe.inspect.diff_result import RecipeDiff

TYPE_CHECKING = False
if TYPE_CHECKING:
    from initrecipe.distributed import distribute, materialize
    from initrecipe.capture.recorder import record


def __getattr__(name: str):
    # The recorder (and torch's fake-tensor machinery) loads only when used: a machine that only
    # replays recipes never imports it.  Likewise torch.distributed for `materialize`/`distribute`.
    if name == "record":
        from initrecipe.capture.recorder import record

        return record
    if name in ("materialize", "distribute"):
        from initrecipe import distributed

        return getattr(distributed, name)
    raise AttributeError(f"module 'initrecipe' has no attribute {name!r}")

__all__ = [
    "record",
    "replay",
    "materialize",
    "distribute",
    "iter_replay",
    "sliceable",
    "sliceable_names",
    "Shard",
    "Box",
    "to_safetensors",
    "diff",
    "RecipeDiff",
    "load",
    "Recipe",
    "TensorEntry",
    "__version__",
    *errors.__all__,  # the whole error and warning tree
]
