"""initrecipe: a model's initial weights as a recipe of kilobytes, not a checkpoint of gigabytes.

Example:
    >>> import initrecipe, torch
    >>> recipe = initrecipe.record(lambda: torch.nn.Linear(4, 2), seed=0)
    >>> weights = initrecipe.replay(recipe)
    >>> sorted(weights)
    ['bias', 'weight']
"""

__version__ = "0.2.0"

from . import errors  # noqa: E402
from .errors import (  # noqa: E402
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
from .recipe import Recipe, TensorEntry, load  # noqa: E402
from .replay import iter_replay, replay, sliceable, sliceable_names  # noqa: E402
from .sharding import Box, Shard  # noqa: E402
from .convert import to_safetensors  # noqa: E402
from .diff import RecipeDiff, diff  # noqa: E402

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .distributed import distribute, materialize
    from .recorder import record


def __getattr__(name: str):
    # The recorder (and torch's fake-tensor machinery) loads only when used: a machine that only
    # replays recipes never imports it.  Likewise torch.distributed for `materialize`/`distribute`.
    if name == "record":
        from .recorder import record

        return record
    if name in ("materialize", "distribute"):
        from . import distributed

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
