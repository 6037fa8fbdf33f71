"""Record -> save -> load -> replay is bitwise equal to eager construction, case by case."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import initrecipe
from eager_check import assert_replay_matches_eager


class Lambda(nn.Module):
    """A module whose tensors a function builds; keeps each test case one line."""

    def __init__(self, build):
        super().__init__()
        build(self)


def case(build):
    return lambda: Lambda(build)


FACTORIES = {
    "empty_then_fill": lambda m: m.register_buffer("b", torch.empty(3, 4).fill_(2.5)),
    "zeros_ones_full": lambda m: (
        m.register_buffer("z", torch.zeros(2, 3)),
        m.register_buffer("o", torch.ones(3, dtype=torch.float16)),
        m.register_buffer("f", torch.full((2, 2), 7, dtype=torch.int32)),
    ),
    "arange_linspace_logspace_eye": lambda m: (
        m.register_buffer("a", torch.arange(0, 10, 3)),
        m.register_buffer("l", torch.linspace(0, 1, 7)),
        m.register_buffer("g", torch.logspace(0, 2, 5)),
        m.register_buffer("e", torch.eye(3, 4)),
    ),
    "rand_randn_randint_randperm": lambda m: (
        m.register_buffer("r", torch.rand(5)),
        m.register_buffer("n", torch.randn(2, 3)),
        m.register_buffer("i", torch.randint(0, 10, (4,))),
        m.register_buffer("i2", torch.randint(7, (3,))),
        m.register_buffer("p", torch.randperm(9)),
    ),
    "tensor_and_as_tensor": lambda m: (
        m.register_buffer("t", torch.tensor([[1.5, 2.0], [3.0, -1.0]])),
        m.register_buffer("u", torch.as_tensor([1, 2, 3], dtype=torch.int64)),
        m.register_buffer("s", torch.tensor(3.25)),
    ),
    "like_forms": lambda m: (
        m.register_buffer("x", torch.randn(3, 2)),
        m.register_buffer("a", torch.zeros_like(m.x)),
        m.register_buffer("b", torch.ones_like(m.x, dtype=torch.float64)),
        m.register_buffer("c", torch.rand_like(m.x)),
        m.register_buffer("d", torch.randn_like(m.x)),
        m.register_buffer("e", torch.full_like(m.x, 4.0)),
        m.register_buffer("f", torch.randint_like(m.x, 5)),
        m.register_buffer("g", torch.empty_like(m.x).normal_()),
    ),
    "new_methods": lambda m: (
        m.register_buffer("x", torch.randn(3)),
        m.register_buffer("a", m.x.new_zeros(2, 2)),
        m.register_buffer("b", m.x.new_ones(4)),
        m.register_buffer("c", m.x.new_full((2,), 3.0)),
        m.register_buffer("d", m.x.new_tensor([1.0, 2.0])),
        m.register_buffer("e", m.x.new_empty(5).uniform_()),
    ),
    "dtype_and_device_keywords": lambda m: (
        m.register_buffer("a", torch.zeros(3, dtype=torch.bfloat16, device="cpu")),
        m.register_buffer("b", torch.randn(3, dtype=torch.float64, device=torch.device("cpu"))),
        m.register_buffer("c", torch.arange(4, dtype=torch.float32)),
    ),
}


@pytest.mark.parametrize("name", list(FACTORIES))
def test_factory_functions_replay_bitwise(name):
    assert_replay_matches_eager(case(FACTORIES[name]))


def _w(m):
    m.w = nn.Parameter(torch.randn(6, 4))
    return m.w


VIEW_WRITES = {
    "select_zero": lambda m: _w(m)[0].zero_(),
    "slice_fill": lambda m: _w(m).data[:, :2].fill_(1),
    "strided_view_zero": lambda m: _w(m).data.view(-1)[::2].zero_(),
    "transpose_mul": lambda m: _w(m).data.t().mul_(2),
    "view_as_copy": lambda m: _w(m).data.view_as(torch.ones(4, 6)).copy_(torch.arange(24.0).reshape(4, 6)),
    "split_chunks": lambda m: [c.normal_(std=i + 1.0) for i, c in enumerate(_w(m).data.split(2))],
    "unbind_rows": lambda m: [r.uniform_(-i, i) for i, r in enumerate(_w(m).data.unbind(0))],
}


@pytest.mark.parametrize("name", list(VIEW_WRITES))
def test_writes_through_views_reach_the_base(name):
    def build(m):
        with torch.no_grad():
            VIEW_WRITES[name](m)

    assert_replay_matches_eager(case(build))


def test_in_place_view_changes_t_transpose_squeeze_unsqueeze():
    def build(m):
        x = torch.empty(2, 4)
        x.normal_()
        x.t_()
        x.mul_(torch.arange(2.0))
        y = torch.zeros(3, 1, 5)
        y.squeeze_(1).transpose_(0, 1).unsqueeze_(0)
        y.add_(1.5)
        m.register_buffer("x", x)
        m.register_buffer("y", y)
        m.w = nn.Linear(64, 32)
        nn.init.orthogonal_(m.w.weight)  # wide: orthogonal_ transposes in place

    assert_replay_matches_eager(case(build))


def test_unsupported_operator_is_named_with_what_to_do():
    def build(m):
        m.register_buffer("x", torch.fft.fft(torch.randn(4)).real)

    with pytest.raises(initrecipe.RecordError, match=r"unsupported operator `aten\._fft_r2c\.default`.*allowlist"):
        initrecipe.record(case(build))


def test_numpy_and_tolist_during_init_get_true_values():
    import numpy as np

    def build(m):
        w = torch.randn(4)
        table = np.asarray(w) * 2
        m.register_buffer("w", w)
        m.register_buffer("t", torch.tensor(table))

    recipe = assert_replay_matches_eager(case(build))
    weights = initrecipe.replay(recipe)
    assert torch.equal(weights["t"], weights["w"] * 2)


def test_copy_between_recorded_tensors_in_both_directions_has_no_cycle():
    def build(m):
        m.a = nn.Parameter(torch.randn(3, 3))
        m.b = nn.Parameter(torch.randn(3, 3))
        with torch.no_grad():
            m.a.copy_(m.b * 2)
            m.b.copy_(m.a + 1)
            m.a.add_(m.b)

    assert_replay_matches_eager(case(build))


INITS = {
    "uniform": lambda t: nn.init.uniform_(t, -0.3, 0.7),
    "normal": lambda t: nn.init.normal_(t, 1.0, 0.5),
    "trunc_normal": lambda t: nn.init.trunc_normal_(t, std=0.02),
    "trunc_normal_narrow": lambda t: nn.init.trunc_normal_(t, mean=0.0, std=1.0, a=-0.1, b=0.1),
    "constant": lambda t: nn.init.constant_(t, 0.3),
    "ones": nn.init.ones_,
    "zeros": nn.init.zeros_,
    "eye": nn.init.eye_,
    "dirac": lambda t: nn.init.dirac_(t.data.view(4, 4, 1, 1) if t.dim() == 2 else t),
    "xavier_uniform": nn.init.xavier_uniform_,
    "xavier_normal": nn.init.xavier_normal_,
    "kaiming_uniform": lambda t: nn.init.kaiming_uniform_(t, a=math.sqrt(5)),
    "kaiming_normal": lambda t: nn.init.kaiming_normal_(t, mode="fan_out", nonlinearity="relu"),
    "orthogonal": nn.init.orthogonal_,
    "sparse": lambda t: nn.init.sparse_(t, sparsity=0.5),
}


@pytest.mark.parametrize("name", list(INITS))
def test_every_nn_init_function_replays_bitwise(name):
    def build(m):
        m.w = nn.Parameter(torch.empty(4, 4))
        m.v = nn.Parameter(torch.zeros(8, 5))
        INITS[name](m.w)
        if name not in ("eye", "dirac"):
            INITS[name](m.v)
        m.after = nn.Parameter(torch.randn(3))  # the generator's position after the init must match too

    assert_replay_matches_eager(case(build))


def test_conv_dirac_and_large_trunc_normal_replay_bitwise():
    def build(m):
        m.conv = nn.Conv2d(4, 4, 3)
        nn.init.dirac_(m.conv.weight)
        m.big = nn.Parameter(torch.empty(300, 200))
        nn.init.trunc_normal_(m.big, std=1.0, a=-1.5, b=1.5)
        m.tail = nn.Linear(5, 5)

    assert_replay_matches_eager(case(build))


def test_data_dependent_item_bool_tolist_any_see_true_values():
    seen = {}

    def build(m):
        m.w = nn.Parameter(torch.randn(8))
        seen["item"] = m.w[0].item()
        seen["bool"] = bool(m.w.sum() > 0)
        seen["tolist"] = m.w[:3].tolist()
        seen["any"] = bool((m.w > 1.0).any())
        if seen["bool"]:
            m.w.data.mul_(2)
        m.v = nn.Parameter(torch.randn(3) * seen["item"])

    assert_replay_matches_eager(case(build))
    torch.manual_seed(0)
    w = torch.randn(8)
    assert seen["item"] == w[0].item()
    assert seen["tolist"] == w[:3].tolist()
    assert seen["any"] == bool((w > 1.0).any())


def test_boolean_mask_indexing_records_data_dependent_shapes():
    def build(m):
        w = torch.randn(10)
        m.register_buffer("positive", w[w > 0])
        m.register_buffer("idx", torch.nonzero(w < 0))
        m.register_buffer("after", torch.randn(2))

    assert_replay_matches_eager(case(build))


def test_private_generator_manual_seed_inside_and_fork_rng():
    def build(m):
        g = torch.Generator().manual_seed(1234)
        m.a = nn.Parameter(torch.randn(3, generator=g))
        m.b = nn.Parameter(torch.randn(3))
        torch.manual_seed(7)
        m.c = nn.Parameter(torch.randn(3))
        with torch.random.fork_rng():
            torch.manual_seed(99)
            m.d = nn.Parameter(torch.randn(3))
        m.e = nn.Parameter(torch.randn(3))  # continues after c, as if the fork never happened
        with torch.random.fork_rng():
            m.f = nn.Parameter(torch.randn(2))  # same values as g below
        m.g = nn.Parameter(torch.randn(2))
        m.h = nn.Parameter(torch.rand(4, generator=g))
        state = torch.get_rng_state()
        m.i = nn.Parameter(torch.randn(2))
        torch.set_rng_state(state)
        m.j = nn.Parameter(torch.randn(2))  # equals i

    recipe = assert_replay_matches_eager(case(build))
    weights = initrecipe.replay(recipe)
    assert torch.equal(weights["f"], weights["g"])
    assert torch.equal(weights["i"], weights["j"])


@pytest.mark.parametrize("seed", [None, 0, 2**40 + 3])
def test_global_generator_after_record_matches_eager(seed):
    if seed is None:
        torch.manual_seed(5)
        torch.randn(7)  # a state that is not a fresh manual_seed state
    assert_replay_matches_eager(lambda: nn.Sequential(nn.Linear(5, 4), nn.Linear(4, 2)), seed=seed)


def test_sync_rng_false_restores_the_state_from_before_record():
    torch.manual_seed(3)
    before = torch.get_rng_state()
    initrecipe.record(lambda: nn.Linear(10, 10), seed=1, sync_rng=False)
    assert torch.equal(torch.get_rng_state(), before)


def test_ties_persistent_and_non_persistent_buffers_and_int_buffers():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(10, 4, padding_idx=2)
            self.head = nn.Linear(4, 10, bias=False)
            self.other = nn.Linear(4, 10, bias=False)
            self.head.weight = self.emb.weight
            self.other.weight = self.emb.weight
            self.bn = nn.BatchNorm1d(4)
            self.register_buffer("inv_freq", 1.0 / (10000 ** (torch.arange(0, 4, 2).float() / 4)), persistent=False)
            self.register_buffer("mask", torch.ones(3, 3, dtype=torch.bool).tril())

    recipe = assert_replay_matches_eager(Tied)
    assert recipe.tie_groups == [["emb.weight", "head.weight", "other.weight"]]
    assert recipe.persistent["inv_freq"] is False
    assert recipe.persistent["bn.num_batches_tracked"] is True
    assert recipe.dtypes["bn.num_batches_tracked"] == torch.int64
    assert recipe.dtypes["mask"] == torch.bool
    assert recipe.entries["emb.weight"].kind == "parameter"


def test_half_precision_parameters_and_dtype_conversion_during_init():
    def build():
        m = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
        m[0].to(torch.bfloat16)
        m[1].half()
        m.extra = nn.Parameter((torch.randn(3, 3) * 0.1).to(torch.float16))
        return m

    assert_replay_matches_eager(build)


def test_module_to_dtype_keeps_ties():
    def build():
        m = nn.Module()
        m.a = nn.Linear(3, 3)
        m.b = nn.Linear(3, 3)
        m.b.weight = m.a.weight
        return m.double()

    recipe = assert_replay_matches_eager(build)
    assert recipe.tie_groups == [["a.weight", "b.weight"]]


def test_weight_norm_parametrization():
    def build():
        return nn.utils.parametrizations.weight_norm(nn.Linear(5, 3))

    recipe = assert_replay_matches_eager(build)
    assert "parametrizations.weight.original0" in recipe.names


@pytest.mark.parametrize("build", [
    lambda: nn.utils.parametrizations.spectral_norm(nn.Linear(16, 16)),
    lambda: nn.utils.parametrizations.spectral_norm(nn.Conv2d(3, 8, 3)),
    lambda: nn.utils.parametrizations.orthogonal(nn.Linear(16, 16)),
    lambda: nn.utils.parametrizations.orthogonal(nn.Linear(16, 8)),
    lambda: nn.utils.parametrizations.orthogonal(nn.Linear(8, 8), orthogonal_map="cayley"),
    lambda: nn.utils.parametrizations.orthogonal(nn.Linear(8, 8), orthogonal_map="householder"),
    lambda: nn.utils.parametrizations.orthogonal(nn.Linear(8, 8), use_trivialization=False),
], ids=["spectral_norm", "spectral_norm_conv", "orthogonal", "orthogonal_rect", "cayley", "householder", "no_trivialization"])
def test_spectral_norm_and_orthogonal_parametrizations_replay_bitwise(build):
    # Both register their `original` with `original.set_(right_inverse(weight))` (issue 15):
    # `set_` makes the parameter view another storage; spectral_norm then draws `_u`/`_v` and runs
    # 15 power iterations, orthogonal runs a QR (`geqrf`, which has no meta kernel in torch).
    recipe = assert_replay_matches_eager(build, seed=3)
    assert "parametrizations.weight.original" in recipe.names


def test_parameter_from_expression_and_requires_grad_false():
    def build(m):
        m.w = nn.Parameter(torch.randn(5, 5) * 0.1)
        m.frozen = nn.Parameter(torch.randn(2), requires_grad=False)

    recipe = assert_replay_matches_eager(case(build))
    assert recipe.entries["frozen"].requires_grad is False


def test_module_built_inside_no_grad():
    def build():
        with torch.no_grad():
            return nn.Sequential(nn.Linear(3, 3), nn.GELU(), nn.Linear(3, 1))

    assert_replay_matches_eager(build)


def test_user_code_sees_a_cpu_tensor_not_meta():
    seen = {}

    def build(m):
        m.w = nn.Parameter(torch.empty(3))
        seen["is_meta"] = m.w.is_meta
        seen["device"] = m.w.device
        nn.init.normal_(m.w)

    assert_replay_matches_eager(case(build))
    assert seen == {"is_meta": False, "device": torch.device("cpu")}


def test_nested_record_is_refused_clearly():
    def outer():
        initrecipe.record(lambda: nn.Linear(2, 2))
        return nn.Linear(2, 2)

    with pytest.raises(initrecipe.RecordError, match="nested recording is not supported"):
        initrecipe.record(outer)


def test_model_fn_must_return_a_module():
    with pytest.raises(initrecipe.RecordError, match="it must return an nn.Module"):
        initrecipe.record(lambda: torch.randn(3))


def test_generator_restored_when_model_fn_raises():
    torch.manual_seed(11)
    before = torch.get_rng_state()

    def broken():
        torch.randn(3)
        raise KeyError("boom")

    with pytest.raises(KeyError):
        initrecipe.record(broken)
    assert torch.equal(torch.get_rng_state(), before)


def test_replay_into_meta_module_keeps_ties():
    def build():
        m = nn.Module()
        m.emb = nn.Embedding(6, 3)
        m.head = nn.Linear(3, 6, bias=False)
        m.head.weight = m.emb.weight
        m.register_buffer("steps", torch.zeros((), dtype=torch.int64))
        return m

    recipe = initrecipe.record(build, seed=0)
    with torch.device("meta"):
        meta = build()
    filled = initrecipe.replay(recipe, into=meta)
    assert filled is meta
    assert meta.head.weight is meta.emb.weight
    assert not meta.emb.weight.is_meta
    torch.manual_seed(0)
    eager = build()
    assert torch.equal(meta.emb.weight, eager.emb.weight)
    assert isinstance(meta.emb.weight, nn.Parameter)


def test_replay_into_a_module_of_another_shape_names_the_mismatch():
    recipe = initrecipe.record(lambda: nn.Linear(3, 3), seed=0)
    with torch.device("meta"):
        other = nn.Sequential(nn.Linear(3, 3))
    with pytest.raises(initrecipe.ReplayError, match="the module has `0.bias` and 1 more that the recipe lacks"):
        initrecipe.replay(recipe, into=other)


def test_partial_replay_by_names_equals_full_replay():
    recipe = initrecipe.record(lambda: nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2)), seed=0)
    full = initrecipe.replay(recipe)
    part = initrecipe.replay(recipe, names=["1.weight"])
    assert list(part) == ["1.weight"]
    assert torch.equal(part["1.weight"], full["1.weight"])
    pred = initrecipe.replay(recipe, names=lambda n: n.endswith("bias"))
    assert list(pred) == ["0.bias", "1.bias"]
    with pytest.raises(initrecipe.ReplayError, match="`nope` is not a tensor of this recipe"):
        initrecipe.replay(recipe, names=["nope"])


def test_replay_accepts_a_path_and_save_is_atomic(tmp_path):
    recipe = initrecipe.record(lambda: nn.Linear(3, 2), seed=4)
    path = recipe.save(tmp_path / "m.recipe")
    assert [p.name for p in tmp_path.iterdir()] == ["m.recipe"]
    assert torch.equal(initrecipe.replay(path)["weight"], initrecipe.replay(recipe)["weight"])
    assert initrecipe.load(path).content_hash == recipe.content_hash
    with open(path, "rb") as handle:
        assert initrecipe.load(handle).content_hash == recipe.content_hash


def test_recipe_introspection_without_replay():
    recipe = initrecipe.record(lambda: nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3)), seed=9)
    assert recipe.names == [
        "0.weight", "0.bias", "1.weight", "1.bias",
        "1.running_mean", "1.running_var", "1.num_batches_tracked",
    ]
    assert recipe.shapes["0.weight"] == (3, 4)
    assert recipe.seed == 9 and recipe.rng == "torch"
    assert recipe.parameter_names == ["0.weight", "0.bias", "1.weight", "1.bias"]
    assert recipe.num_ops == len(recipe.program) > 0
    assert recipe.content_hash.startswith("sha256:") and len(recipe.content_hash) == 71
    assert recipe.total_bytes == (12 + 3 + 3 + 3 + 3 + 3) * 4 + 8


def test_recording_allocates_no_storage_for_huge_models():
    # 4 GiB of parameters: recording must not allocate them.
    recipe = initrecipe.record(lambda: nn.Linear(32768, 32768, bias=False), seed=0, sync_rng=False)
    assert recipe.total_bytes == 32768 * 32768 * 4
    assert len(recipe.to_bytes()) < 2048


def test_recording_needs_no_numpy(monkeypatch):
    """numpy is not a runtime dependency: constants and generator states are read without it."""

    g = torch.Generator().manual_seed(3)
    torch.randn(5, generator=g)
    state = g.get_state()  # a state no seed gives: recorded as bytes

    def build():
        m = torch.nn.Linear(3, 2)
        m.register_buffer("c", torch.tensor([1.5, -2.0, 0.25]))
        torch.set_rng_state(state)
        m.extra = torch.nn.Parameter(torch.randn(4))
        return m

    def no_numpy(self, *args, **kwargs):
        raise RuntimeError("Numpy is not available")

    monkeypatch.setattr(torch.Tensor, "numpy", no_numpy)
    recipe = initrecipe.record(build, seed=0)
    monkeypatch.undo()
    assert any(type(ins).__name__ == "RngSetState" for ins in recipe.program)
    weights = initrecipe.replay(initrecipe.load(recipe.to_bytes()))
    torch.manual_seed(0)
    eager = build()
    for name, tensor in list(eager.named_parameters()) + list(eager.named_buffers()):
        assert torch.equal(weights[name], tensor), name


def test_a_generator_state_copied_from_another_generator():
    """`torch.set_rng_state(g.get_state())` inside the constructor copies what eager would copy, not
    the recorder's placeholder state (the generators hold placeholders while recording)."""

    def build():
        m = torch.nn.Linear(3, 2)
        g = torch.Generator().manual_seed(3)
        torch.randn(5, generator=g)
        torch.set_rng_state(g.get_state())
        m.extra = torch.nn.Parameter(torch.randn(4))
        h = torch.Generator()
        h.set_state(torch.get_rng_state())
        m.other = torch.nn.Parameter(torch.rand(3, generator=h))
        return m

    for rng in ("torch", "portable"):
        weights = initrecipe.replay(initrecipe.load(initrecipe.record(build, seed=0, rng=rng).to_bytes()))
        torch.manual_seed(0)
        eager = build()
        for name in ("extra", "other"):  # pinned draws: torch's bits in both modes
            assert torch.equal(weights[name], getattr(eager, name)), (rng, name)
