"""rng="portable": weights as a pure function of (seed, tensor name, the tensor's own program).

Each invariance of the portable mode is one test here: thread count, replay order, subsets,
shards stitched back together, name stability when a model grows, pinned streams that stay
torch's, dead draws that cost nothing, and the statistics of what the samplers produce.  The
bit-level samplers are tested in test_samplers.py / test_philox.py, the QR in test_fixed_qr.py,
and the cross-version fixture in test_golden.py.
"""

from __future__ import annotations

import functools
import math
from typing import Callable

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import initrecipe
from initrecipe import Shard
from initrecipe.program.ir import Call, GenRef, PortableKey

SEED = 1234


class Mixed(nn.Module):
    """One tensor per kind of init program the portable mode distinguishes."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(16, 12)  # kaiming_uniform_ + uniform_ bias
        self.emb = nn.Embedding(20, 8, padding_idx=0)  # normal_, then one row zeroed: not elementwise
        self.norm = nn.LayerNorm(12)  # constants
        self.trunc = nn.Parameter(torch.empty(10, 6))
        nn.init.trunc_normal_(self.trunc, std=0.02)
        self.xavier = nn.Parameter(torch.empty(6, 10))
        nn.init.xavier_normal_(self.xavier)
        self.orth = nn.Parameter(torch.empty(8, 5))
        nn.init.orthogonal_(self.orth)
        self.sparse = nn.Parameter(torch.empty(10, 4))
        nn.init.sparse_(self.sparse, 0.5)
        self.scaled = nn.Parameter(torch.randn(7, 9) * 0.1)  # a temporary keyed by the parameter
        self.brain = nn.Parameter(torch.empty(6, 6, dtype=torch.bfloat16).uniform_(-1, 1))
        self.register_buffer("positions", torch.arange(12).unsqueeze(0))
        self.register_buffer("mask", torch.empty(5, 5).bernoulli_(0.3))
        self.register_buffer("ints", torch.randint(3, 10, (4, 4)))
        self.register_buffer("waits", torch.empty(3, 7).exponential_(2.0))
        self.striped = nn.Parameter(torch.empty(6, 8).uniform_(-1, 1))
        with torch.no_grad():
            self.striped[1:5:2, ::3].fill_(2.0)  # constants written through a strided view
            self.striped[:, 7].zero_()


SLICEABLE = {
    "lin.weight": True, "lin.bias": True, "emb.weight": True, "norm.weight": True, "norm.bias": True,
    "trunc": True, "xavier": True, "orth": False, "sparse": False, "scaled": True, "brain": True,
    "positions": True, "mask": True, "ints": True, "waits": True, "striped": True,
}


@functools.lru_cache(maxsize=None)
def mixed_recipe() -> initrecipe.Recipe:
    return initrecipe.load(initrecipe.record(Mixed, seed=SEED, rng="portable").to_bytes())


@functools.lru_cache(maxsize=None)
def mixed_weights() -> dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in initrecipe.replay(mixed_recipe()).items()}


def bits(t: torch.Tensor) -> bytes:
    return t.detach().contiguous().view(-1).view(torch.uint8).numpy().tobytes()


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert list(a) == list(b)
    for name in a:
        assert a[name].dtype == b[name].dtype and a[name].shape == b[name].shape, name
        assert bits(a[name]) == bits(b[name]), f"`{name}` differs"


def keyed_draws(recipe: initrecipe.Recipe) -> dict[str, list[int]]:
    """stream -> positions of the recipe's portable draws."""
    streams: dict[str, list[int]] = {}
    for ins in recipe.program:
        if isinstance(ins, Call):
            for a in list(ins.args) + list(ins.kwargs.values()):
                if isinstance(a, PortableKey):
                    streams.setdefault(a.stream, []).append(a.position)
    return streams


# ------------------------------------------------------------------------------------ recording
def test_portable_recipe_is_format_1_1_and_round_trips() -> None:
    recipe = mixed_recipe()
    assert recipe.rng == "portable" and recipe.seed == SEED
    data = recipe.to_bytes()
    assert initrecipe.load(data).to_bytes() == data
    import msgpack

    assert msgpack.unpackb(data)["version"] == [1, 1]
    torch_recipe = initrecipe.record(lambda: nn.Linear(2, 2), seed=0)
    assert msgpack.unpackb(torch_recipe.to_bytes())["version"] == [1, 0]


def test_draws_are_keyed_by_the_tensor_they_flow_into() -> None:
    streams = keyed_draws(mixed_recipe())
    # Each stream's positions are 0, 1, ... in program order; temporaries (the randn inside
    # `Parameter(randn * 0.1)`) carry the parameter's name.
    assert all(positions == list(range(len(positions))) for positions in streams.values())
    assert set(streams) == {
        "lin.weight", "lin.bias", "emb.weight", "trunc", "xavier", "orth", "sparse", "scaled", "brain", "mask",
        "ints", "waits", "striped",
    }
    assert len(streams["sparse"]) == 1 + 4  # normal_ and one randperm per column
    assert not any(isinstance(a, GenRef) for ins in mixed_recipe().program if isinstance(ins, Call) for a in ins.args)


def test_dead_draws_are_not_in_the_recipe() -> None:
    def model() -> nn.Module:
        m = nn.Linear(32, 32)  # reset_parameters draws kaiming_uniform_ and uniform_ ...
        nn.init.normal_(m.weight, std=0.02)  # ... which these overwrite completely
        nn.init.zeros_(m.bias)
        return m

    recipe = initrecipe.record(model, seed=0, rng="portable")
    assert keyed_draws(recipe) == {"weight": [0]}
    ops = [ins.op for ins in recipe.program if isinstance(ins, Call)]
    assert "aten.uniform_.default" not in ops


def test_transformers_linear_layers_draw_once() -> None:
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2)
    recipe = initrecipe.record(lambda: transformers.LlamaForCausalLM(cfg), seed=0, rng="portable")
    streams = keyed_draws(recipe)
    assert streams and all(positions == [0] for positions in streams.values())
    assert "model.layers.1.mlp.down_proj.weight" in streams


def test_portable_needs_a_seed() -> None:
    with pytest.raises(initrecipe.RecordError, match=r"rng='portable' needs an explicit seed in 0 … 2\*\*64-1"):
        initrecipe.record(lambda: nn.Linear(2, 2), rng="portable")
    with pytest.raises(initrecipe.RecordError, match="needs an explicit seed"):
        initrecipe.record(lambda: nn.Linear(2, 2), seed=-1, rng="portable")


def test_unsupported_random_operator_is_refused_while_recording() -> None:
    def model() -> nn.Module:
        m = nn.Module()
        m.register_buffer("w", torch.empty(3, dtype=torch.int64).random_())
        return m

    with pytest.raises(initrecipe.RecordError, match=r"`aten.random_.default` has no portable sampler"):
        initrecipe.record(model, seed=0, rng="portable")


def test_poisson_is_refused_naming_the_tensor_and_the_ways_out() -> None:
    def model() -> nn.Module:
        m = nn.Module()
        m.register_buffer("counts", torch.poisson(torch.full((4,), 3.0)) + 1)
        return m

    with pytest.raises(initrecipe.RecordError) as info:
        initrecipe.record(model, seed=0, rng="portable")
    message = str(info.value)
    assert message.startswith(
        "`aten.poisson.default` (torch.poisson) draws the values of `counts`, and rng='portable' has no sampler "
        "for it: a Poisson value of an arbitrary rate has no inverse with a bounded number of IEEE operations"
    )
    assert "Record with rng='torch', or draw `counts` with a portable sampler (`bernoulli`, `bernoulli_`" in message
    # rng="torch" records it, bitwise as eager.
    recipe = initrecipe.record(model, seed=0)
    torch.manual_seed(0)
    assert torch.equal(initrecipe.replay(recipe)["counts"], model().counts)


def test_reading_random_values_while_recording_records_again_with_the_keys() -> None:
    # Control flow on an unpinned draw: a portable draw's values depend on the name of the tensor
    # they end up in, known only at the end, so `record` records twice: the second time the
    # constructor reads the values replay will compute.
    class Reads(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.randn(33))
            self.register_buffer("sign", torch.tensor(1.0 if self.w.sum().item() > 0 else -1.0))
            self.register_buffer("above", (self.w > 0).nonzero().flatten())  # a data-dependent shape

    seen = set()
    for seed in range(6):
        recipe = initrecipe.record(Reads, seed=seed, rng="portable")
        weights = initrecipe.replay(recipe)
        w = weights["w"]
        assert weights["sign"].item() == (1.0 if w.sum().item() > 0 else -1.0)
        assert torch.equal(weights["above"], (w > 0).nonzero().flatten())
        seen.add(weights["sign"].item())
    assert seen == {1.0, -1.0}  # both branches were exercised


def test_reading_random_values_is_refused_when_recording_does_not_settle(monkeypatch) -> None:
    import initrecipe.capture.recorder as recorder

    monkeypatch.setattr(recorder, "_PORTABLE_RECORDINGS", 1)

    def model() -> nn.Module:
        m = nn.Linear(4, 4)
        if m.weight.sum() > 0:  # data-dependent control flow on an unpinned draw
            m.bias.data.zero_()
        return m

    with pytest.raises(initrecipe.RecordError, match="reads the values of random tensors while it runs"):
        initrecipe.record(model, seed=0, rng="portable")
    # With rng='torch' the same constructor records (values come from torch's stream).
    initrecipe.record(model, seed=0)


@pytest.mark.parametrize("build", [
    lambda: nn.utils.parametrizations.spectral_norm(nn.Linear(24, 16)),
    lambda: nn.utils.parametrizations.orthogonal(nn.Linear(16, 16)),
    lambda: nn.utils.parametrizations.orthogonal(nn.Linear(24, 8)),
    lambda: nn.utils.parametrizations.orthogonal(nn.Linear(8, 8), orthogonal_map="householder"),
], ids=["spectral_norm", "orthogonal", "orthogonal_rect", "householder"])
def test_parametrizations_are_portable(build) -> None:
    # spectral_norm draws `_u`/`_v` and runs power iterations; orthogonal reads its weight to test
    # orthogonality (so `record` records twice) and runs a QR, which portable recipes run as
    # initrecipe's fixed-order QR: the bits do not depend on threads or shards.
    recipe = initrecipe.load(initrecipe.record(build, seed=2, rng="portable").to_bytes())
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = initrecipe.replay(recipe)
        torch.set_num_threads(2)
        two = initrecipe.replay(recipe)
    finally:
        torch.set_num_threads(threads)
    assert_same(one, two)
    for name, tensor in one.items():
        shard = Shard.of(tensor.shape[0], 1, 2) if tensor.dim() else None
        if shard is not None:
            part = initrecipe.replay(recipe, names=[name], shards={name: shard})[name]
            assert bits(part) == bits(tensor.narrow(0, shard.start, shard.stop - shard.start)), name
    base = one.get("parametrizations.weight.0.base")
    if base is not None:  # orthogonal: the stored base is orthogonal
        eye = torch.eye(base.shape[-1])
        assert (base.mT @ base - eye).abs().max() < 1e-5


# ------------------------------------------------------------------------------------ pinned streams
class Pinned(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(42)
        self.private = nn.Parameter(torch.randn(4, 4, generator=g))
        self.free = nn.Parameter(torch.randn(4, 4))
        torch.manual_seed(99)
        self.seeded = nn.Parameter(torch.randn(3, 3))
        with torch.random.fork_rng():
            torch.manual_seed(7)
            self.forked = nn.Parameter(torch.rand(2, 5))
        self.after = nn.Parameter(torch.rand(3))


def test_pinned_streams_reproduce_torch_exactly() -> None:
    recipe = initrecipe.load(initrecipe.record(Pinned, seed=0, rng="portable").to_bytes())
    weights = initrecipe.replay(recipe)
    torch.manual_seed(0)
    eager = dict(Pinned().named_parameters())
    for name in ("private", "seeded", "forked", "after"):
        assert bits(weights[name]) == bits(eager[name]), name
    assert bits(weights["free"]) != bits(eager["free"])  # the unpinned draw is portable
    assert set(keyed_draws(recipe)) == {"free"}
    # A pinned tensor replayed alone, or after the others, is the same.
    assert bits(initrecipe.replay(recipe, names=["after"])["after"]) == bits(eager["after"])


# ------------------------------------------------------------------------------------ invariance
def test_thread_count_does_not_change_bits() -> None:
    def model() -> nn.Module:
        m = nn.Module()
        m.big = nn.Linear(1024, 640)
        m.trunc = nn.Parameter(nn.init.trunc_normal_(torch.empty(512, 300), std=0.02))
        m.orth = nn.Parameter(nn.init.orthogonal_(torch.empty(192, 160)))
        return m

    recipe = initrecipe.record(model, seed=5, rng="portable")
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = initrecipe.replay(recipe)
        torch.set_num_threads(2)
        assert torch.get_num_threads() == 2
        two = initrecipe.replay(recipe)
    finally:
        torch.set_num_threads(threads)
    assert_same(one, two)


def test_order_and_subsets_do_not_change_bits() -> None:
    recipe, full = mixed_recipe(), mixed_weights()
    alone = {}
    for name in reversed(recipe.names):
        alone[name] = initrecipe.replay(recipe, names=[name])[name].detach()
    assert_same({n: alone[n] for n in full}, full)
    subset = ["sparse", "lin.bias", "waits"]
    assert_same(initrecipe.replay(recipe, names=lambda n: n in subset), {n: full[n] for n in full if n in subset})


def test_which_programs_are_generated_slice_only() -> None:
    recipe = mixed_recipe()
    assert {n: initrecipe.sliceable(recipe, n) for n in recipe.names} == SLICEABLE
    torch_recipe = initrecipe.record(Mixed, seed=SEED)
    assert not initrecipe.sliceable(torch_recipe, "lin.weight")  # torch mode: sequential draws


@pytest.mark.parametrize("world_size", [1, 2, 3, 5])
def test_shards_stitch_back_to_the_full_tensor(world_size: int) -> None:
    recipe, full = mixed_recipe(), mixed_weights()
    for dim in (0, -1):
        parts = [
            initrecipe.replay(recipe, shards=lambda name, shape, r=rank: Shard.of(shape[dim], r, world_size, dim))
            for rank in range(world_size)
        ]
        for name, tensor in full.items():
            stitched = torch.cat([p[name].detach() for p in parts], dim=dim)
            assert bits(stitched) == bits(tensor), (name, dim, world_size)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_slice_equals_the_slice_of_the_full_replay(data: st.DataObject) -> None:
    recipe, full = mixed_recipe(), mixed_weights()
    name = data.draw(st.sampled_from(recipe.names))
    shape = recipe.shapes[name]
    dim = data.draw(st.integers(0, len(shape) - 1))
    start = data.draw(st.integers(0, shape[dim]))
    stop = data.draw(st.integers(start, shape[dim]))
    got = initrecipe.replay(recipe, names=[name], shards={name: Shard(dim, start, stop)})[name]
    assert bits(got) == bits(full[name].narrow(dim, start, stop - start))


def test_slice_only_generation_needs_only_the_slice_memory() -> None:
    def model() -> nn.Module:
        m = nn.Module()
        m.w = nn.Parameter(torch.empty(4096, 1024))
        nn.init.normal_(m.w, std=0.02)
        return m

    recipe = initrecipe.record(model, seed=0, rng="portable")
    whole = 4096 * 1024 * 4
    shard = Shard.of(4096, 3, 8)
    part = initrecipe.replay(recipe, shards={"w": shard}, max_bytes=whole // 4)["w"]
    assert part.shape == (512, 1024)
    assert bits(part) == bits(initrecipe.replay(recipe)["w"][1536:2048])


def test_name_stability_when_a_model_grows() -> None:
    transformers = pytest.importorskip("transformers")

    def llama(layers: int) -> nn.Module:
        cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                                       num_attention_heads=4, num_key_value_heads=2)
        return transformers.LlamaForCausalLM(cfg)

    small = initrecipe.replay(initrecipe.record(lambda: llama(2), seed=3, rng="portable"))
    large = initrecipe.replay(initrecipe.record(lambda: llama(3), seed=3, rng="portable"))
    assert set(small) < set(large)
    for name, tensor in small.items():
        assert bits(tensor) == bits(large[name]), name

    class Grown(nn.Module):
        def __init__(self, extra: bool) -> None:
            super().__init__()
            self.a = nn.Linear(8, 8)
            if extra:
                self.inserted = nn.Linear(8, 8)
            self.b = nn.Linear(8, 8)

    before = initrecipe.replay(initrecipe.record(lambda: Grown(False), seed=3, rng="portable"))
    after = initrecipe.replay(initrecipe.record(lambda: Grown(True), seed=3, rng="portable"))
    for name, tensor in before.items():
        assert bits(tensor) == bits(after[name]), name


def test_seed_changes_every_tensor() -> None:
    a = initrecipe.replay(initrecipe.record(Mixed, seed=1, rng="portable"))
    b = initrecipe.replay(initrecipe.record(Mixed, seed=2, rng="portable"))
    random_names = set(keyed_draws(mixed_recipe()))
    for name in random_names:
        assert bits(a[name]) != bits(b[name]), name


def test_device_split_gives_the_same_bits(monkeypatch: pytest.MonkeyPatch) -> None:
    """The off-CPU execution path (exact operators in place, others on CPU copies) on the CPU."""
    import importlib

    from initrecipe.runtime.rng_modes import PortableContext

    replay_module = importlib.import_module("initrecipe.runtime.replay_run")

    monkeypatch.setattr(replay_module, "PortableContext", functools.partial(PortableContext, split_devices=True))
    recipe = initrecipe.record(Pinned, seed=0, rng="portable")
    split = initrecipe.replay(recipe)
    monkeypatch.undo()
    assert_same(split, initrecipe.replay(recipe))
    monkeypatch.setattr(replay_module, "PortableContext", functools.partial(PortableContext, split_devices=True))
    assert_same(initrecipe.replay(mixed_recipe()), mixed_weights())
    halves = initrecipe.replay(mixed_recipe(), shards=lambda name, shape: Shard.of(shape[0], 1, 2))
    for name, tensor in mixed_weights().items():
        expected = tensor.narrow(0, Shard.of(tensor.shape[0], 1, 2).start, halves[name].shape[0])
        assert bits(halves[name]) == bits(expected), name


def test_sharded_replay_frees_each_slice_without_the_cyclic_collector() -> None:
    """A slice must die with its last reference: with the cyclic GC paused (as ``replay`` pauses
    it), a reference cycle around a slice program's tensors kept every slice of a materialize alive
    (3.2 GiB instead of 2.1 GiB per rank for the Llama-1B config at world size 2)."""
    import gc
    import weakref

    recipe = mixed_recipe()
    request = lambda name, shape: Shard.of(shape[0], 1, 2)  # noqa: E731
    alive: list[weakref.ref] = []
    gc.disable()
    try:
        for entries, values in initrecipe.iter_replay(recipe, shards=request):
            alive.append(weakref.ref(values if values._base is None else values._base))
            del values
        assert len(alive) == len({e.value for e in recipe.tensors})
        assert [ref() for ref in alive] == [None] * len(alive)
    finally:
        gc.enable()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="compares CPU and CUDA replays; needs a GPU")
def test_cpu_and_cuda_give_identical_bits() -> None:  # pragma: no cover - runs where a GPU is present
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(vocab_size=256, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2)
    recipe = initrecipe.record(lambda: transformers.LlamaForCausalLM(cfg), seed=0, rng="portable")
    assert_same({k: v.cpu() for k, v in initrecipe.replay(recipe, device="cuda").items()}, initrecipe.replay(recipe))
    assert_same({k: v.cpu() for k, v in initrecipe.replay(mixed_recipe(), device="cuda").items()}, mixed_weights())


# ------------------------------------------------------------------------------------ statistics
def test_parameters_have_eager_statistics() -> None:
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(vocab_size=512, hidden_size=256, intermediate_size=512, num_hidden_layers=1,
                                   num_attention_heads=4, num_key_value_heads=4)
    recipe = initrecipe.record(lambda: transformers.LlamaForCausalLM(cfg), seed=0, rng="portable")
    weights = initrecipe.replay(recipe)
    torch.manual_seed(0)
    eager = dict(transformers.LlamaForCausalLM(cfg).named_parameters())
    for name in ("model.embed_tokens.weight", "model.layers.0.mlp.up_proj.weight", "lm_head.weight"):
        ours, theirs = weights[name].detach().double(), eager[name].detach().double()
        assert abs(ours.mean().item()) < 5 * 0.02 / math.sqrt(ours.numel())
        assert ours.std().item() == pytest.approx(theirs.std().item(), rel=0.02)
        assert ours.std().item() == pytest.approx(cfg.initializer_range, rel=0.02)


def test_init_functions_keep_their_contracts() -> None:
    def model() -> nn.Module:
        m = nn.Module()
        m.trunc = nn.Parameter(nn.init.trunc_normal_(torch.empty(200, 300), mean=0.1, std=1.0, a=-0.5, b=1.5))
        m.orth = nn.Parameter(nn.init.orthogonal_(torch.empty(64, 96), gain=2.0))
        m.kaiming = nn.Linear(400, 300)
        return m

    w = initrecipe.replay(initrecipe.record(model, seed=9, rng="portable"))
    trunc = w["trunc"].detach()
    assert trunc.min() >= -0.5 and trunc.max() <= 1.5
    # Truncated N(0.1, 1) on [-0.5, 1.5]: mean = mu + (pdf(alpha) - pdf(beta)) / (cdf(beta) - cdf(alpha)).
    pdf = lambda x: math.exp(-x * x / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    cdf = lambda x: (1 + math.erf(x / math.sqrt(2))) / 2  # noqa: E731
    alpha, beta = -0.6, 1.4
    expected = 0.1 + (pdf(alpha) - pdf(beta)) / (cdf(beta) - cdf(alpha))
    assert trunc.double().mean().item() == pytest.approx(expected, abs=4 * 0.6 / math.sqrt(trunc.numel()))
    orth = w["orth"].detach().double() / 2.0
    assert torch.allclose(orth @ orth.T, torch.eye(64, dtype=torch.float64), atol=1e-5)
    weight = w["kaiming.weight"].detach().double().flatten()
    bound = 1 / math.sqrt(400)
    assert weight.abs().max() <= bound
    # Kolmogorov–Smirnov against U(-bound, bound); critical value for alpha = 0.001.
    ordered = weight.sort().values
    n = ordered.numel()
    cdf = (ordered + bound) / (2 * bound)
    grid = torch.arange(1, n + 1, dtype=torch.float64) / n
    statistic = torch.maximum(grid - cdf, cdf - (grid - 1 / n)).max().item()
    assert statistic < 1.95 / math.sqrt(n)


# ------------------------------------------------------------------------------------ errors
def test_shard_requests_are_checked() -> None:
    recipe = mixed_recipe()
    with pytest.raises(initrecipe.ReplayError, match=r"shard of `lin.weight`: \[3:20\] is not a slice of dimension 0 \(size 12\)"):
        initrecipe.replay(recipe, shards={"lin.weight": Shard(0, 3, 20)})
    with pytest.raises(initrecipe.ReplayError, match="shard of `lin.bias`: dim 1 is out of range"):
        initrecipe.replay(recipe, shards={"lin.bias": Shard(1, 0, 1)})
    with pytest.raises(initrecipe.ReplayError, match="a shard is requested for `nope`"):
        initrecipe.replay(recipe, shards={"nope": Shard(0, 0, 1)})
    with pytest.raises(TypeError, match="cannot be combined with `into`"):
        initrecipe.replay(recipe, into=Mixed(), shards={"lin.bias": Shard(0, 0, 1)})
    with pytest.raises(TypeError, match="shards must give initrecipe.Shard or initrecipe.Box values, found tuple"):
        initrecipe.replay(recipe, shards={"lin.bias": (0, 0, 1)})
    with pytest.raises(initrecipe.ReplayError, match=r"box of `lin.weight`: \[2:1\] is not a slice of dimension 1"):
        initrecipe.replay(recipe, shards={"lin.weight": initrecipe.Box((0, 2), (4, 1))})
    with pytest.raises(initrecipe.ReplayError, match="box of `lin.bias`: 2 starts and 2 stops for a tensor of shape"):
        initrecipe.replay(recipe, shards={"lin.bias": initrecipe.Box((0, 0), (1, 1))})
    with pytest.raises(ValueError, match="rank must be in 0 … world_size-1"):
        Shard.of(10, 4, 4)
    assert [Shard.of(10, r, 4) for r in range(4)] == [Shard(0, 0, 3), Shard(0, 3, 6), Shard(0, 6, 9), Shard(0, 9, 10)]
    assert Shard.of(2, 3, 4) == Shard(0, 2, 2)  # torch.chunk leaves late ranks empty


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_box_equals_the_block_of_the_full_replay(data: st.DataObject) -> None:
    recipe, full = mixed_recipe(), mixed_weights()
    name = data.draw(st.sampled_from(sorted(full)))
    shape = tuple(full[name].shape)
    starts = tuple(data.draw(st.integers(0, size)) for size in shape)
    stops = tuple(data.draw(st.integers(start, size)) for start, size in zip(starts, shape))
    box = initrecipe.Box(starts, stops)
    part = initrecipe.replay(recipe, names=[name], shards={name: box})[name]
    assert bits(part) == bits(box.take(full[name]).contiguous()), (name, box)


def test_torch_recipes_take_shards_by_slicing() -> None:
    recipe = initrecipe.record(Mixed, seed=SEED)
    full = initrecipe.replay(recipe)
    part = initrecipe.replay(recipe, shards={"lin.weight": Shard(1, 4, 9)})
    assert bits(part["lin.weight"]) == bits(full["lin.weight"][:, 4:9])
    assert bits(part["orth"]) == bits(full["orth"])


def test_draws_the_samplers_cannot_take_are_refused_while_recording() -> None:
    def model() -> nn.Module:
        m = nn.Module()
        m.b = nn.Parameter(torch.empty(3).exponential_(1e-40))
        return m

    with pytest.raises(initrecipe.RecordError, match=r"while recording: `aten.exponential_.default` rejects its "
                       r"arguments: exponential needs lambd >= 2\*\*-122 .*; portable recipes cannot draw it"):
        initrecipe.record(model, seed=0, rng="portable")


@pytest.mark.parametrize("kind, params", [("normal", (0.0, 1.0)), ("uniform", (-1.0, 1.0)), ("bernoulli", (0.3,)),
                                          ("randint", (0, 10)), ("exponential", (2.0,)), ("cauchy", (0.0, 1.0)),
                                          ("log_normal", (0.0, 1.0)), ("geometric", (0.2,)),
                                          ("bernoulli_tensor", (torch.empty(1000, device="meta"),)),
                                          ("normal_tensor", (torch.empty(1000, device="meta"), 2.0))])
def test_device_path_mixes_no_cpu_tensors(kind: str, params: tuple) -> None:
    """What an accelerator runs — the samplers' torch-op path, erfinv, log, the fixed QR — runs on the
    meta device too: no CPU tensor (other than scalars) enters it, so it runs unchanged on CUDA."""
    from initrecipe.rng.portable.fixed_qr import qr
    from initrecipe.rng.portable.samplers import erfinv, log, reference_sample_

    for dtype in (torch.float32, torch.bfloat16):
        out = torch.empty(1000, dtype=dtype, device="meta")
        assert reference_sample_(out, kind, (1, 2), params, [(5, 500), (2000, 500)]) is out
    assert erfinv(torch.empty(10, device="meta")).device.type == "meta"
    assert log(torch.empty(10, device="meta")).device.type == "meta"
    q, r = qr(torch.empty(6, 4, device="meta"))
    assert (q.device.type, tuple(q.shape), tuple(r.shape)) == ("meta", (6, 4), (4, 4))


# --------------------------------------------------------------------------- format 1.2 draws
class NewDraws(nn.Module):
    """Every random operator that format 1.2 made portable, from a module constructor."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mask", torch.bernoulli(torch.full((16,), 0.5)))
        self.register_buffer("mask_p", torch.bernoulli(torch.zeros(4, 6), p=0.3))
        gates = torch.empty(6, 10)
        gates.bernoulli_(torch.linspace(0.0, 1.0, 10))
        self.register_buffer("gates", gates)
        self.heavy = nn.Parameter(torch.empty(8, 16).cauchy_(0.0, 0.5))
        self.scales = nn.Parameter(torch.empty(8, 16).log_normal_(0.0, 0.25))
        self.register_buffer("waits", torch.empty(40).geometric_(0.2))
        self.shifted = nn.Parameter(torch.normal(torch.full((4, 8), 5.0), torch.full((4, 8), 0.1)))
        self.noisy = nn.Parameter(torch.normal(torch.zeros(8, 4), 3.0))
        self.spread = nn.Parameter(torch.normal(0.5, torch.linspace(0.1, 1.0, 12)))
        self.register_buffer("picks", torch.multinomial(torch.tensor([0.2, 0.0, 0.8]), 20, replacement=True))
        self.register_buffer("order", torch.multinomial(torch.ones(3, 7), 4))


NEW_OPS = {
    "mask": "aten.bernoulli.default", "mask_p": "aten.bernoulli.p", "gates": "aten.bernoulli_.Tensor",
    "heavy": "aten.cauchy_.default", "scales": "aten.log_normal_.default", "waits": "aten.geometric_.default",
    "shifted": "aten.normal.Tensor_Tensor", "noisy": "aten.normal.Tensor_float", "spread": "aten.normal.float_Tensor",
    "picks": "aten.multinomial.default", "order": "aten.multinomial.default",
}


def test_each_new_random_operator_records_and_replays_portably() -> None:
    from initrecipe.format.spec import format_version_for

    recipe = initrecipe.record(NewDraws, seed=SEED, rng="portable")
    keyed = {ins.kwargs["generator"].stream: ins.op for ins in recipe.program
             if isinstance(ins, Call) and isinstance(ins.kwargs.get("generator"), PortableKey)}
    assert {name: op for name, op in keyed.items() if name in NEW_OPS} == NEW_OPS
    assert format_version_for(recipe.rng, recipe.program) == (1, 2)
    assert initrecipe.load(recipe.to_bytes()).to_bytes() == recipe.to_bytes()
    weights = initrecipe.replay(recipe)
    again = initrecipe.replay(initrecipe.load(recipe.to_bytes()))
    assert_same(weights, again)
    assert set(weights["mask"].unique().tolist()) == {0.0, 1.0}
    assert not weights["mask_p"].eq(0.0).all()
    assert weights["gates"][:, 0].eq(0.0).all() and weights["gates"][:, -1].eq(1.0).all()
    assert weights["waits"].ge(1.0).all() and torch.equal(weights["waits"], weights["waits"].ceil())
    assert weights["scales"].gt(0.0).all()
    assert (weights["shifted"] - 5.0).abs().max() < 1.0
    assert (weights["picks"] != 1).all() and weights["picks"].dtype == torch.int64
    assert all(len(set(row.tolist())) == 4 for row in weights["order"])
    # The values are the samplers' for each tensor's own stream key (the names), whatever the model order.
    from initrecipe.rng.portable.philox import derive_key
    from initrecipe.rng.portable.samplers import sample_

    expected = sample_(torch.empty(16), "bernoulli", derive_key(SEED, "mask", 0), (0.5,))
    assert torch.equal(weights["mask"], expected)
    expected = sample_(torch.empty(8, 16), "cauchy", derive_key(SEED, "heavy", 0), (0.0, 0.5))
    assert torch.equal(weights["heavy"].detach(), expected)


def test_bernoulli_mask_buffer_records_in_portable_mode() -> None:
    """The issue's example: a module whose buffer is torch.bernoulli of a tensor."""

    class Masked(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(4, 4)
            self.register_buffer("mask", torch.bernoulli(torch.full((16,), 0.5)))

    recipe = initrecipe.record(Masked, seed=3, rng="portable")
    model = initrecipe.replay(recipe, into=Masked())
    assert model.mask.shape == (16,) and set(model.mask.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(model.mask, initrecipe.replay(recipe)["mask"])
    assert initrecipe.record(Masked, seed=4, rng="portable").content_hash != recipe.content_hash


class MoreSliceable(NewDraws):
    """The in-place tensor bernoulli_ and normal(float, Tensor), with parameters laid out like the tensor."""

    def __init__(self) -> None:
        super().__init__()
        gates = torch.empty(6, 10)
        gates.bernoulli_(torch.full((6, 10), 0.4))
        self.register_buffer("gates_full", gates)
        self.spread_full = nn.Parameter(torch.normal(0.5, torch.full((12, 3), 2.0)))


def test_new_draws_are_generated_slice_only() -> None:
    recipe = initrecipe.record(MoreSliceable, seed=SEED, rng="portable")
    full = initrecipe.replay(recipe)
    elementwise = {"mask", "mask_p", "heavy", "scales", "waits", "shifted", "noisy", "gates_full", "spread_full"}
    for name in elementwise:
        assert initrecipe.sliceable(recipe, name), name
    assert not initrecipe.sliceable(recipe, "picks") and not initrecipe.sliceable(recipe, "order")
    for world in (2, 3):
        for rank in range(world):
            part = initrecipe.replay(recipe, shards=lambda name, shape, r=rank: Shard.of(shape[0], r, world))
            for name, tensor in part.items():
                shard = Shard.of(full[name].shape[0], rank, world)
                assert torch.equal(tensor, full[name].narrow(0, shard.start, shard.stop - shard.start)), (name, rank)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_trunc_normal_in_16_bits_is_the_float32_draw_rounded_once(dtype: torch.dtype) -> None:
    """nn.init.trunc_normal_ on a 16-bit parameter: the float32 values (the same stream key, since
    keys are names) rounded once to the dtype; within [a, b], never on a far bound, the right std."""

    def build(dt: torch.dtype) -> Callable[[], nn.Module]:
        def model() -> nn.Module:
            m = nn.Module()
            m.w = nn.Parameter(torch.empty(10_000, dtype=dt))
            nn.init.trunc_normal_(m.w, std=0.1, a=-2.0, b=2.0)
            return m

        return model

    low = initrecipe.replay(initrecipe.record(build(dtype), seed=SEED, rng="portable"))["w"].detach()
    wide = initrecipe.replay(initrecipe.record(build(torch.float32), seed=SEED, rng="portable"))["w"].detach()
    assert low.dtype == dtype and torch.equal(low, wide.to(dtype))
    assert not (low.abs() == 2.0).any() and torch.isfinite(low).all()
    assert abs(float(low.double().std()) - 0.1) < 0.005


def test_trunc_normal_bounds_that_the_dtype_cannot_hold_are_respected() -> None:
    def model() -> nn.Module:
        m = nn.Module()
        m.w = nn.Parameter(torch.empty(20_000, dtype=torch.bfloat16))
        nn.init.trunc_normal_(m.w, mean=0.0, std=1.0, a=-0.1, b=0.1)  # +-0.1 are not bfloat16 values
        return m

    w = initrecipe.replay(initrecipe.record(model, seed=SEED, rng="portable"))["w"].detach().double()
    assert w.min() >= -0.1 and w.max() <= 0.1


def test_trunc_normal_float32_endpoint_word_lands_inside() -> None:
    """HARD_CASES.md, RNG facts: a uniform on the 2^-24 grid hits its lower endpoint once in 2^24
    elements; with f32(2Φ(α)-1) = -1 that is erfinv(-1) = -inf, which the clamp of initrecipe 0.2's
    program put on the bound -2.  Find such an element of a large tensor and replay just that
    element (slice-only): the corrected program gives a finite value far from the bound."""
    from initrecipe.rng.portable.philox import derive_key
    from initrecipe.rng.portable.samplers import erfinv, sample_

    n = 1 << 25
    key = derive_key(SEED, "w", 0)
    words = torch.empty(1 << 22, dtype=torch.int64)
    hit = None
    for start in range(0, n, words.numel()):
        sample_(words, "randint", key, (0, 2**32), [(start, words.numel())])
        zero = torch.nonzero(torch.bitwise_right_shift(words, 8) == 0).flatten()
        if zero.numel():
            hit = start + int(zero[0])
            break
    assert hit is not None  # about two such elements in 2^25 (fixed seed)
    low = 2 * (0.5 * math.erfc(2.0 / 0.1 / math.sqrt(2.0))) - 1  # 2Φ(-20) - 1
    at = sample_(torch.empty(1), "uniform", key, (low, 1.0), [(hit, 1)])
    assert at.item() == -1.0 and erfinv(at).item() == -math.inf  # what the old program fed erfinv_

    def model() -> nn.Module:
        m = nn.Module()
        m.w = nn.Parameter(torch.empty(n))
        nn.init.trunc_normal_(m.w, std=0.1, a=-2.0, b=2.0)
        return m

    recipe = initrecipe.record(model, seed=SEED, rng="portable")
    assert initrecipe.sliceable(recipe, "w")
    value = initrecipe.replay(recipe, shards={"w": Shard(0, hit, hit + 1)})["w"].item()
    assert -0.6 < value < -0.5  # 0.1 * sqrt(2) * erfinv(-(1 - 2^-24)) = -0.5549


def test_bad_tensor_parameters_are_refused_at_replay_naming_the_element() -> None:
    def model() -> nn.Module:
        m = nn.Module()
        m.register_buffer("mask", torch.bernoulli(torch.full((4,), 0.5) * 3))
        return m

    recipe = initrecipe.record(model, seed=0, rng="portable")  # probabilities are data: replay checks them
    with pytest.raises(initrecipe.ReplayError, match=r"^program\[\d+\]: `aten.bernoulli.default` failed: bernoulli: "
                       r"every probability p must be in \[0, 1\]; element 0 is 1.5$"):
        initrecipe.replay(recipe)
