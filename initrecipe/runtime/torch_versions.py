"""Which torch releases replay ``rng="torch"`` recipes bit for bit: the verified-versions table.

A ``torch`` recipe replays eager CPU construction, so its bits depend on how each of torch's CPU
random kernels consumes the generator (``schema/TORCH_RNG.md`` §2), and those kernels can change in
any release.  A recipe records its producer's torch (``producer.torch``).  Before a replay:

* under a torch in :data:`DIFFERING_TORCH` (known to draw differently from the model), or of a
  recipe recorded with one, replay refuses (:class:`~initrecipe.errors.ReplayError`, which ``check``
  reports too), naming the releases that give the recorded bits;
* under a torch not in :data:`VERIFIED_TORCH`, or of a recipe recorded with one, replay warns once
  per process (:class:`~initrecipe.errors.UnverifiedTorchWarning`) and goes on;
* ``portable`` recipes are the same on every supported torch and are never gated.

A release joins :data:`VERIFIED_TORCH` once ``tests/test_torch_rng.py`` and ``tests/test_golden.py``
pass under it (``tools/test_torch_versions.sh``; results in ``docs/TORCH_VERSIONS.md``).
"""

from __future__ import annotations

import warnings

import torch

from initrecipe.errors import ReplayError, UnverifiedTorchWarning

__all__ = ["VERIFIED_TORCH", "DIFFERING_TORCH", "torch_release", "check_torch_version"]

# Releases whose CPU random kernels were checked against schema/TORCH_RNG.md (the torch-RNG and golden
# tests pass under each), oldest first.
VERIFIED_TORCH: tuple[str, ...] = ("2.13.0", "2.14.1", "2.15.0")

# Releases known to consume the generator differently from the model: release -> what differs.
# Empty today; an entry makes replay refuse instead of silently giving other weights.
DIFFERING_TORCH: dict[str, str] = {}

_warned: set[tuple[str | None, str]] = set()


def torch_release(version: str | None = None) -> str:
    """A torch version without its local build tag: ``2.15.0+cu132`` -> ``2.15.0``."""
    return (version if version is not None else torch.__version__).split("+")[0]


def _verified_text() -> str:
    return ", ".join(VERIFIED_TORCH)


def check_torch_version(rng: str, producer: dict[str, str]) -> None:
    """Refuse or warn about replaying an ``rng`` recipe recorded with ``producer["torch"]`` under the
    installed torch (see the module docstring); does nothing for ``portable`` recipes.

    Raises:
        ReplayError: the installed torch, or the recording one, is known to draw differently.

    Example:
        >>> check_torch_version("portable", {"torch": "1.0.0"})  # portable recipes replay anywhere
    """
    if rng != "torch":
        return
    here = torch_release()
    recorded = producer.get("torch")
    recorded = torch_release(recorded) if recorded else None
    if here in DIFFERING_TORCH or (recorded is not None and recorded in DIFFERING_TORCH):
        raise ReplayError(_refusal(here, recorded))
    unverified = [v for v in (recorded, here) if v is not None and v not in VERIFIED_TORCH]
    if unverified and (recorded, here) not in _warned:
        _warned.add((recorded, here))
        warnings.warn(_unverified_text(here, recorded), UnverifiedTorchWarning, stacklevel=4)


def _refusal(here: str, recorded: str | None) -> str:
    made = f"recorded with torch {recorded}" if recorded else "recorded with an unnamed torch"
    if here in DIFFERING_TORCH:
        why = f"torch {here}, installed here, consumes the CPU generator differently ({DIFFERING_TORCH[here]})"
    else:
        why = f"torch {recorded} consumes the CPU generator differently ({DIFFERING_TORCH[recorded or '']})"
    if recorded is None or recorded in VERIFIED_TORCH:
        what = (f"torch {_verified_text()} give the recorded bits: replay it under one of those, or record "
                "the model again with rng='portable' (the same on every torch)")
    else:
        what = (f"only torch {recorded}'s eager construction gives the recorded bits: record the model again "
                f"under torch {_verified_text()}, or with rng='portable' (the same on every torch)")
    return f"this rng='torch' recipe was {made}; {why}, so replay would not give the recorded weights; {what}"


def _unverified_text(here: str, recorded: str | None) -> str:
    if here not in VERIFIED_TORCH:
        subject = f"torch {here}, installed here,"
    else:
        subject = f"torch {recorded}, which recorded this recipe,"
    return (f"{subject} is not among the releases whose CPU random kernels initrecipe has verified "
            f"(torch {_verified_text()}): this rng='torch' recipe replays bitwise only if its kernels "
            "draw as those do (schema/TORCH_RNG.md). Compare against eager construction once, or record "
            "with rng='portable'")
