"""The one exception tree of initrecipe: catch :class:`RecipeError` to catch them all.

Warnings (something eager does too, but probably not what the model's author meant) derive from
:class:`RecipeWarning`, so ``warnings.filterwarnings("error", category=initrecipe.RecipeWarning)``
turns them all into errors.
"""

from __future__ import annotations

__all__ = [
    "RecipeError",
    "RecipeFormatError",
    "UnsupportedVersionError",
    "RecipeIntegrityError",
    "ResourceLimitError",
    "MemoryLimitError",
    "WorkLimitError",
    "RecordError",
    "ReplayError",
    "SettingError",
    "CheckpointError",
    "OutputExistsError",
    "OutputWriteError",
    "RecipeWarning",
    "UninitializedWarning",
    "UnverifiedTorchWarning",
]


class RecipeError(Exception):
    """Base class of every error initrecipe raises on purpose."""


class RecipeFormatError(RecipeError, ValueError):
    """The bytes or the document are not a valid init recipe."""


class UnsupportedVersionError(RecipeFormatError):
    """The recipe was written in a format version this initrecipe cannot read."""


class RecipeIntegrityError(RecipeFormatError):
    """The recipe's stored content hash does not match its content (corruption or tampering)."""


class ResourceLimitError(RecipeError, MemoryError):
    """Replaying the recipe would exceed a configured resource limit."""


class MemoryLimitError(ResourceLimitError):
    """The memory a program allocates is over ``max_bytes`` (raised by :func:`initrecipe.analysis.infer.infer_facts`)."""


class WorkLimitError(ResourceLimitError):
    """Replaying the recipe would take more work than its budget (``max_work``) allows.

    Attributes:
        estimate: the :class:`initrecipe.analysis.cost.WorkEstimate` over its budget (typed
            ``object`` here: this module is the bottom layer and imports nothing of initrecipe's).
    """

    estimate: object


class RecordError(RecipeError, RuntimeError):
    """The model constructor did something the recorder cannot capture faithfully."""


class ReplayError(RecipeError, RuntimeError):
    """Executing a recipe failed or diverged from what was recorded."""


class SettingError(RecipeError, ValueError):
    """An environment variable that configures initrecipe (``INITRECIPE_KERNEL_PATH``,
    ``INITRECIPE_HUGE_PAGES``) has a value this process cannot use."""


class CheckpointError(RecipeError, ValueError):
    """A safetensors checkpoint cannot be read (missing, damaged, or not a checkpoint)."""


class OutputExistsError(RecipeError, FileExistsError):
    """The output folder already holds a checkpoint and overwriting was not asked for."""


class OutputWriteError(RecipeError, OSError):
    """Writing the output failed: disk full, no permission, read-only file system, ..."""


class RecipeWarning(UserWarning):
    """Base class of every warning initrecipe issues: the work goes on, but read the message."""


class UninitializedWarning(RecipeWarning):
    """The recorded constructor leaves tensors (fully or partly) uninitialized: eager gives them
    whatever memory holds, and so does replay.  ``recipe.uninitialized_names`` lists them;
    ``initrecipe check --strict`` fails on them."""


class UnverifiedTorchWarning(RecipeWarning):
    """An ``rng="torch"`` recipe is replayed under (or was recorded with) a torch release whose CPU
    random kernels initrecipe has not verified against ``schema/TORCH_RNG.md``; the weights equal
    that torch's eager construction only if its kernels draw as the verified releases do."""

