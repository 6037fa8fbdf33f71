"""Uninitialized tensors as findings of ``record``: the one sentence that reports them.

A constructor that allocates a tensor with ``torch.empty`` (or a meta-device flow whose
``to_empty`` storage no ``reset_parameters``/``init_weights`` writes) gives that tensor whatever
memory holds, in eager and in replay alike: the recipe is faithful, the model is probably not what
its author meant.  :func:`initrecipe.analysis.uninitialized.uninitialized_tensors` decides which tensors are
affected (fully or partly); this module words the decision for the
:class:`~initrecipe.errors.UninitializedWarning` that ``initrecipe.record`` issues and the line
``initrecipe record`` prints.  ``initrecipe check`` lists each tensor (``--strict``: exit 1), and
``initrecipe diff`` reports tensors that become uninitialized.
"""

from __future__ import annotations

from initrecipe.analysis.uninitialized import Uninitialized
from initrecipe.support.display import count_text, safe

__all__ = ["uninitialized_message"]

_SHOWN = 3  # names a message lists before "and N more"


def uninitialized_message(
    found: list[Uninitialized],
    *,
    listed: str = "`recipe.uninitialized_names` lists them all, `initrecipe check` explains each",
) -> str:
    """The one-sentence report of ``found`` (non-empty): the first names, a count, why, what to do,
    and ``listed``: where to see them all.

    Example:
        >>> from initrecipe.analysis.uninitialized import Uninitialized
        >>> import torch
        >>> print(uninitialized_message([Uninitialized("w", (3,), torch.float32, 3, 3)]))
        the constructor leaves 1 tensor uninitialized, `w`: no instruction writes its values, so eager gives it whatever memory holds and so does replay; initialize it in the constructor or with init_weights (`recipe.uninitialized_names` lists them all, `initrecipe check` explains each)
    """
    n = len(found)
    names = ", ".join(f"`{safe(u.name)}`" + (" (partly)" if u.partly else "") for u in found[:_SHOWN])
    if n > _SHOWN:
        names += f" and {n - _SHOWN} more"
    its, it = ("its", "it") if n == 1 else ("their", "them")
    return (f"the constructor leaves {count_text(n, 'tensor')} uninitialized, {names}: no instruction writes "
            f"{its} values, so eager gives {it} whatever memory holds and so does replay; initialize {it} in the "
            f"constructor or with init_weights ({listed})")

