"""Shared assertion: a recipe replays bitwise equal to eager construction."""

from __future__ import annotations

from typing import Callable

import torch

import initrecipe


def eager_tensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    out = dict(module.named_parameters(remove_duplicate=False))
    out.update(dict(module.named_buffers(remove_duplicate=False)))
    return out


def assert_replay_matches_eager(
    fn: Callable[[], torch.nn.Module], seed: int | None = 0, **record_kwargs
) -> initrecipe.Recipe:
    """Record ``fn`` and check replay against ``torch.manual_seed(seed); fn()`` tensor by tensor."""
    if seed is None:
        state = torch.get_rng_state()
        recipe = initrecipe.record(fn, **record_kwargs)
        after_record = torch.get_rng_state()
        torch.set_rng_state(state)
        eager = fn()
        assert torch.equal(after_record, torch.get_rng_state()), "generator state after record differs from eager"
    else:
        recipe = initrecipe.record(fn, seed=seed, **record_kwargs)
        after_record = torch.get_rng_state()
        torch.manual_seed(seed)
        eager = fn()
        if record_kwargs.get("sync_rng", True):
            assert torch.equal(after_record, torch.get_rng_state()), "generator state after record differs from eager"
    recipe = initrecipe.load(recipe.to_bytes())
    replayed = initrecipe.replay(recipe)
    expected = eager_tensors(eager)
    assert list(replayed) == list(expected), (list(replayed), list(expected))
    for name, want in expected.items():
        got = replayed[name]
        assert got.dtype == want.dtype, f"`{name}`: dtype {got.dtype} != {want.dtype}"
        assert got.shape == want.shape, f"`{name}`: shape {tuple(got.shape)} != {tuple(want.shape)}"
        assert got.stride() == want.stride() or not want.is_contiguous(), f"`{name}`: stride"
        assert torch.equal(got, want) or (
            got.is_floating_point() and torch.equal(got.nan_to_num(), want.nan_to_num())
        ), f"`{name}` differs from eager"
        assert isinstance(got, torch.nn.Parameter) == isinstance(want, torch.nn.Parameter), name
        assert got.requires_grad == want.requires_grad, f"`{name}`: requires_grad"
    # ties: same object in eager <=> same object in replay
    names = list(expected)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert (expected[a] is expected[b]) == (replayed[a] is replayed[b]), f"tie `{a}` / `{b}`"
    return recipe
