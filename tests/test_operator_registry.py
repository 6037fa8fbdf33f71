"""The operator registry (initrecipe.program.operators): one consistent declaration per operator.

The ``OLD_*`` tables pin, by value, what the per-operator tables held before they became views of
the registry (issue #22), so that a lost or changed entry fails here.
"""

from __future__ import annotations

import inspect

import pytest

from initrecipe.analysis import cost, describe, preconditions
from initrecipe.capture import dispatch
from initrecipe.program import operators as registry
from initrecipe.program.operators import (NOT_MODELLED, OPERATORS, REGISTRY, Constant, CostFamily, DrawRule, Kind,
                                          Precondition, RecordShortcut, Substitute, op_info)
from initrecipe.rng.portable import semantics
from initrecipe.rng.portable.samplers import SAMPLERS
from initrecipe.rng.torch import draw_costs
from initrecipe.runtime import sharding

OLD_FACTORY = """
    _to_copy alias arange clone complex copy detach empty empty_like empty_strided eye full full_like lift
    lift_fresh lift_fresh_copy linspace logspace new_empty new_empty_strided new_full new_ones new_zeros ones
    ones_like polar scalar_tensor tril_indices triu_indices zeros zeros_like
"""

OLD_RANDOM = """
    bernoulli bernoulli_ cauchy cauchy_ exponential exponential_ geometric geometric_ log_normal log_normal_
    multinomial normal normal_ poisson rand rand_like randint randint_like randn randn_like random random_
    randperm uniform uniform_
"""

OLD_VIEW = """
    _conj _neg_view _reshape_alias _unsafe_view as_strided chunk conj diagonal expand imag movedim narrow
    permute real resolve_conj resolve_neg select slice split split_with_sizes squeeze swapaxes swapdims t
    transpose unbind unflatten unfold unsqueeze view view_as_complex view_as_real
"""

OLD_POINTWISE = """
    __and__ __iand__ __ilshift__ __ior__ __irshift__ __ixor__ __lshift__ __or__ __rshift__ __xor__
    _log_softmax _softmax abs abs_ acos acos_ acosh acosh_ add add_ addcdiv addcdiv_ addcmul addcmul_ asin
    asin_ asinh asinh_ atan atan2 atan2_ atan_ atanh atanh_ bitwise_and bitwise_and_ bitwise_left_shift
    bitwise_not bitwise_not_ bitwise_or bitwise_or_ bitwise_right_shift bitwise_xor bitwise_xor_ ceil ceil_
    clamp clamp_ clamp_max clamp_max_ clamp_min clamp_min_ clip clip_ copy_ cos cos_ cosh cosh_ deg2rad div
    div_ eq eq_ erf erf_ erfc erfc_ erfinv erfinv_ exp exp2 exp2_ exp_ expm1 expm1_ fill fill_ float_power
    floor floor_ floor_divide floor_divide_ fmax fmin fmod fmod_ frac frac_ ge ge_ gelu gt gt_ heaviside hypot
    isfinite isinf isnan isneginf isposinf le le_ lerp lerp_ log log10 log10_ log1p log1p_ log2 log2_ log_
    logical_and logical_and_ logical_not logical_not_ logical_or logical_or_ logical_xor logical_xor_ logit lt
    lt_ masked_fill masked_fill_ maximum minimum mul mul_ nan_to_num nan_to_num_ ne ne_ neg neg_ pow pow_
    rad2deg reciprocal reciprocal_ relu relu_ remainder remainder_ round round_ rsqrt rsqrt_ rsub sgn sgn_
    sigmoid sigmoid_ sign sign_ signbit silu sin sin_ sinh sinh_ softplus sqrt sqrt_ square sub sub_ tan tan_
    tanh tanh_ true_divide trunc trunc_ where zero zero_
"""

OLD_STRUCTURAL = """
    _index_put_impl_ _linalg_eigh _linalg_svd _unique2 _unsafe_view_copy _weight_norm _weight_norm_interface
    addmm addmv alias_copy all amax amin any argmax argmin argsort as_strided_copy as_strided_scatter bmm
    bucketize cat constant_pad_nd count_nonzero cross cumprod cumprod_ cumsum cumsum_ detach_copy diag
    diag_embed diagonal_copy diagonal_scatter dot einsum expand_copy flip gather geqrf histc index index_add
    index_add_ index_copy index_copy_ index_fill index_fill_ index_put index_put_ index_select kthvalue
    linalg_cholesky_ex linalg_eigh linalg_householder_product linalg_qr linalg_solve_triangular linalg_svd
    linalg_vector_norm masked_scatter masked_scatter_ masked_select matmul max mean min mm mv nonzero norm
    norm_except_dim orgqr outer permute_copy prod repeat repeat_interleave resize_ roll rot90 scatter scatter_
    scatter_add scatter_add_ scatter_reduce searchsorted select_copy select_scatter slice_copy slice_scatter
    sort split_copy split_with_sizes_copy squeeze_copy stack std std_mean sum t_copy topk transpose_copy
    triangular_solve tril tril_ triu triu_ unbind_copy unique_consecutive unsqueeze_copy var var_mean vdot
    view_copy
"""

OLD_SHAPE_ONLY = """
    empty_like full_like new_empty new_empty_strided new_full new_ones new_zeros ones_like rand_like
    randint_like randn_like zeros_like
"""

OLD_UNINITIALIZED_LIKE = """
    empty_like new_empty new_empty_strided
"""

OLD_OVERWRITING = """
    bernoulli_ cauchy_ copy_ exponential_ fill_ geometric_ log_normal_ normal_ random_ uniform_ zero_
"""

OLD_VALUE_DEPENDENT = """
    multinomial poisson
"""

OLD_DATA_DEPENDENT_SHAPE = """
    _unique2 masked_select nonzero repeat_interleave unique_consecutive
"""

OLD_UNINITIALIZED_FACTORY = """
    empty empty_like empty_strided new_empty new_empty_strided
"""

OLD_DEVICE_EXACT = """
    __and__ __iand__ __ior__ __ixor__ __or__ __xor__ _conj _neg_view _reshape_alias _to_copy _unsafe_view abs
    abs_ alias alias_copy as_strided bitwise_and bitwise_and_ bitwise_not bitwise_not_ bitwise_or bitwise_or_
    bitwise_xor bitwise_xor_ cat ceil ceil_ chunk clamp clamp_ clamp_max clamp_max_ clamp_min clamp_min_ clip
    clip_ clone conj constant_pad_nd copy copy_ detach detach_copy diag diag_embed diagonal empty empty_like
    empty_strided eq eq_ expand expand_copy fill fill_ flip floor floor_ fmax fmin full full_like gather ge
    ge_ gt gt_ imag index_select isfinite isinf isnan le le_ lift lift_fresh lift_fresh_copy logical_and
    logical_and_ logical_not logical_not_ logical_or logical_or_ logical_xor logical_xor_ lt lt_ masked_fill
    masked_fill_ maximum minimum movedim mul mul_ narrow ne ne_ neg neg_ new_empty new_empty_strided new_full
    new_ones new_zeros ones ones_like permute permute_copy real relu relu_ repeat resolve_conj resolve_neg
    roll scalar_tensor select select_copy sgn sgn_ sign sign_ signbit slice slice_copy split split_with_sizes
    squeeze squeeze_copy stack swapaxes swapdims t t_copy transpose transpose_copy tril tril_ triu triu_ trunc
    trunc_ unbind unflatten unfold unsqueeze unsqueeze_copy view view_as_complex view_as_real view_copy where
    zero zero_ zeros zeros_like
"""

OLD_ADD_LIKE = """
    add add_ rsub sub sub_
"""

OLD_SHARDING_ELEMENTWISE = """
    _to_copy abs abs_ add add_ addcdiv addcdiv_ addcmul addcmul_ ceil ceil_ clamp clamp_ clamp_max clamp_max_
    clamp_min clamp_min_ clip clip_ clone copy_ cos cos_ div div_ erf erf_ erfc erfc_ erfinv erfinv_ exp exp2
    exp2_ exp_ expm1 expm1_ fill_ floor floor_ lerp lerp_ log log10 log10_ log1p log1p_ log2 log2_ log_
    masked_fill masked_fill_ maximum minimum mul mul_ neg neg_ pow pow_ reciprocal reciprocal_ relu relu_
    rsqrt rsqrt_ rsub sigmoid sigmoid_ sign sign_ sin sin_ sqrt sqrt_ square sub sub_ tan tan_ tanh tanh_
    true_divide trunc trunc_ where zero_
"""

OLD_COPIES = """
    _to_copy alias alias_copy clone copy copy_ detach_copy lift_fresh lift_fresh_copy
"""

OLD_EMPTY = """
    empty empty_like empty_strided new_empty new_empty_strided
"""

OLD_ZEROS = """
    new_zeros zero zero_ zeros zeros_like
"""

OLD_ONES = """
    new_ones ones ones_like
"""

OLD_FULL = """
    fill fill_ full full_like new_full
"""

OLD_COST_CHOLESKY = """
    linalg_cholesky_ex
"""

OLD_COST_EIGH = """
    _linalg_eigh linalg_eigh
"""

OLD_COST_EINSUM = """
    einsum
"""

OLD_COST_INDEXING = """
    _index_put_impl_ gather index index_add index_add_ index_copy index_copy_ index_fill index_fill_ index_put
    index_put_ index_select masked_scatter masked_scatter_ masked_select nonzero repeat_interleave scatter
    scatter_ scatter_add scatter_add_ scatter_reduce
"""

OLD_COST_MATMUL = """
    addmm addmv bmm dot matmul mm mv outer vdot
"""

OLD_COST_NO_DATA = """
    empty empty_like empty_strided lift lift_fresh new_empty new_empty_strided resize_
"""

OLD_COST_QR = """
    geqrf linalg_householder_product linalg_qr orgqr
"""

OLD_COST_SCAN = """
    cumprod cumprod_ cumsum cumsum_
"""

OLD_COST_SEARCHING = """
    bucketize searchsorted
"""

OLD_COST_SOLVE = """
    linalg_solve_triangular triangular_solve
"""

OLD_COST_SORTING = """
    _unique2 argsort kthvalue sort topk
"""

OLD_COST_SVD = """
    _linalg_svd linalg_svd
"""

OLD_COST_TRANSCENDENTAL = """
    _log_softmax _softmax _weight_norm _weight_norm_interface acos acos_ acosh acosh_ addcdiv addcdiv_ asin
    asin_ asinh asinh_ atan atan2 atan2_ atan_ atanh atanh_ cos cos_ cosh cosh_ div div_ erf erf_ erfc erfc_
    erfinv erfinv_ exp exp2 exp2_ exp_ expm1 expm1_ float_power floor_divide floor_divide_ fmod fmod_ gelu
    hypot lerp lerp_ linalg_vector_norm log log10 log10_ log1p log1p_ log2 log2_ log_ logit logspace norm
    norm_except_dim polar pow pow_ reciprocal reciprocal_ remainder remainder_ rsqrt rsqrt_ sigmoid sigmoid_
    silu sin sin_ sinh sinh_ softplus sqrt sqrt_ std std_mean tan tan_ tanh tanh_ true_divide var var_mean
"""

OLD_PRECONDITIONS = {
    "_weight_norm": "weight_norm",
    "_weight_norm_interface": "weight_norm",
    "randint": "randint_bounds",
    "randint_like": "randint_bounds",
    "random": "random_bounds",
    "random_": "random_bounds",
    "round": "round",
    "round_": "round",
}

OLD_DRAW_COSTS = {  # packet: (probe family, rule)
    "bernoulli": ("bernoulli", "bernoulli"),
    "bernoulli_": ("bernoulli", "bernoulli"),
    "cauchy": ("cauchy", "two_per_element"),
    "cauchy_": ("cauchy", "two_per_element"),
    "exponential": ("exponential", "two_per_element"),
    "exponential_": ("exponential", "two_per_element"),
    "geometric": ("geometric", "two_per_element"),
    "geometric_": ("geometric", "two_per_element"),
    "log_normal": ("log_normal", "log_normal"),
    "log_normal_": ("log_normal", "log_normal"),
    "multinomial": ("multinomial", "multinomial"),
    "normal": ("normal", "normal"),
    "normal_": ("normal", "normal"),
    "rand": ("uniform", "uniform"),
    "rand_like": ("uniform", "uniform"),
    "randint": ("random", "random"),
    "randint_like": ("random", "random"),
    "randn": ("normal", "normal"),
    "randn_like": ("normal", "normal"),
    "random": ("random", "random"),
    "random_": ("random", "random"),
    "randperm": ("randperm", "randperm"),
    "uniform": ("uniform", "uniform"),
    "uniform_": ("uniform", "uniform"),
}

OLD_SAMPLERS = {  # operator: (sampler, parameters, in place)

    "aten.bernoulli.default": ("bernoulli_tensor", ("self",), False),

    "aten.bernoulli.p": ("bernoulli", ("p",), False),

    "aten.bernoulli_.Tensor": ("bernoulli_tensor", ("p",), True),

    "aten.bernoulli_.float": ("bernoulli", ("p",), True),

    "aten.cauchy_.default": ("cauchy", ("median", "sigma"), True),

    "aten.exponential_.default": ("exponential", ("lambd",), True),

    "aten.geometric_.default": ("geometric", ("p",), True),

    "aten.log_normal_.default": ("log_normal", ("mean", "std"), True),

    "aten.multinomial.default": ("multinomial", ("self", "num_samples", "replacement"), False),

    "aten.normal.Tensor_Tensor": ("normal_tensor", ("mean", "std"), False),

    "aten.normal.Tensor_float": ("normal_tensor", ("mean", "std"), False),

    "aten.normal.float_Tensor": ("normal_tensor", ("mean", "std"), False),

    "aten.normal.float_float": ("normal", ("mean", "std"), False),

    "aten.normal_.default": ("normal", ("mean", "std"), True),

    "aten.rand.generator": ("uniform", (0.0, 1.0), False),

    "aten.rand_like.generator": ("uniform", (0.0, 1.0), False),

    "aten.randint.generator": ("randint", (0, "high"), False),

    "aten.randint.low_generator": ("randint", ("low", "high"), False),

    "aten.randint_like.generator": ("randint", (0, "high"), False),

    "aten.randint_like.low_generator_dtype": ("randint", ("low", "high"), False),

    "aten.randn.generator": ("normal", (0.0, 1.0), False),

    "aten.randn_like.generator": ("normal", (0.0, 1.0), False),

    "aten.random_.from": ("randint", ("from", "to"), True),

    "aten.random_.to": ("randint", (0, "to"), True),

    "aten.randperm.generator": ("permutation", ("n",), False),

    "aten.uniform_.default": ("uniform", ("from", "to"), True),

}

OLD_FORMAT_1_2_DRAWS = """
    aten.bernoulli.default aten.bernoulli.p aten.bernoulli_.Tensor aten.cauchy_.default
    aten.geometric_.default aten.log_normal_.default aten.multinomial.default aten.normal.Tensor_Tensor
    aten.normal.Tensor_float aten.normal.float_Tensor
"""

OLD_ELEMENTWISE_DRAWS = """
    aten.bernoulli.default aten.bernoulli.p aten.bernoulli_.Tensor aten.bernoulli_.float aten.cauchy_.default
    aten.exponential_.default aten.geometric_.default aten.log_normal_.default aten.normal.Tensor_Tensor
    aten.normal.Tensor_float aten.normal.float_Tensor aten.normal.float_float aten.normal_.default
    aten.rand.generator aten.rand_like.generator aten.randint.generator aten.randint.low_generator
    aten.randint_like.generator aten.randint_like.low_generator_dtype aten.randn.generator
    aten.randn_like.generator aten.random_.from aten.random_.to aten.uniform_.default
"""

OLD_REFUSED_DRAWS = """
    aten.poisson.default
"""

OLD_SUBSTITUTED = """
    aten.erfinv.default aten.erfinv_.default aten.geqrf.default aten.linalg_householder_product.default
    aten.linalg_qr.default aten.orgqr.default
"""

OLD_CHUNKABLE_FILLS = {"aten.normal_.default": 16, "aten.uniform_.default": 1}

OLD_RECORD_FACTORIES = """
    aten.empty.memory_format aten.empty_strided.default aten.full.default aten.ones.default aten.zeros.default
"""

OLD_RECORD_FILLS = """
    aten.bernoulli_.float aten.cauchy_.default aten.exponential_.default aten.fill_.Scalar
    aten.geometric_.default aten.log_normal_.default aten.normal_.default aten.random_.default
    aten.random_.from aten.random_.to aten.uniform_.default aten.zero_.default
"""

OLD_GENERATOR_OVERLOADS = {
    ("rand", "default"): "generator",
    ("rand_like", "default"): "generator",
    ("randint", "default"): "generator",
    ("randint", "low"): "low_generator",
    ("randint_like", "Tensor"): "Tensor_generator",
    ("randint_like", "default"): "generator",
    ("randint_like", "low_dtype"): "low_generator_dtype",
    ("randn", "default"): "generator",
    ("randn_like", "default"): "generator",
    ("randperm", "default"): "generator",
}

OLD_SHARDING_FACTORIES = {
    "empty": "empty",
    "empty_like": "empty",
    "empty_strided": "empty",
    "full": "full",
    "full_like": "full",
    "new_empty": "empty",
    "new_empty_strided": "empty",
    "new_full": "full",
    "new_ones": "ones",
    "new_zeros": "zeros",
    "ones": "ones",
    "ones_like": "ones",
    "zeros": "zeros",
    "zeros_like": "zeros",
}


def _set(text: str) -> frozenset[str]:
    return frozenset(text.split())


def test_every_allowed_operator_is_declared_once_with_a_kind() -> None:
    names = [operator.name for operator in OPERATORS]
    assert len(names) == len(set(names)) == len(REGISTRY)
    assert registry.ALLOWED_OPERATORS == frozenset(names)
    assert all(isinstance(operator.kind, Kind) for operator in OPERATORS)
    for operator in OPERATORS:
        overloads = [overload.name for overload in operator.overloads]
        assert len(overloads) == len(set(overloads)), operator.name


@pytest.mark.parametrize("kind, old", [(Kind.FACTORY, OLD_FACTORY), (Kind.RANDOM, OLD_RANDOM), (Kind.VIEW, OLD_VIEW),
                                       (Kind.POINTWISE, OLD_POINTWISE), (Kind.STRUCTURAL, OLD_STRUCTURAL)])
def test_each_kind_holds_the_operators_it_held(kind: Kind, old: str) -> None:
    assert frozenset(operator.name for operator in OPERATORS if operator.kind is kind) == _set(old)


def _declared(fact: str) -> frozenset[str]:
    return frozenset(operator.name for operator in OPERATORS if getattr(operator, fact))


def _constant(constant: Constant) -> frozenset[str]:
    return frozenset(name for name, value in registry.CONSTANT_RESULTS.items() if value is constant)


def _cost(family: CostFamily) -> frozenset[str]:
    return frozenset(name for name, value in registry.COST_FAMILIES.items() if value is family)


def test_the_views_equal_the_tables_they_replace() -> None:
    assert registry.ALLOWED_OPERATORS == _set(OLD_FACTORY + OLD_RANDOM + OLD_VIEW + OLD_POINTWISE + OLD_STRUCTURAL)
    assert registry.RANDOM_OPERATORS == _set(OLD_RANDOM)
    assert registry.POINTWISE_OPERATORS == _set(OLD_POINTWISE)
    assert registry.SHAPE_ONLY_OPERATORS == _set(OLD_SHAPE_ONLY)
    assert registry.UNINITIALIZED_LIKE == _set(OLD_UNINITIALIZED_LIKE)
    assert _declared("overwrites") == _set(OLD_OVERWRITING)
    assert _declared("value_dependent_draw") == _set(OLD_VALUE_DEPENDENT)
    assert _declared("data_dependent_shape") == _set(OLD_DATA_DEPENDENT_SHAPE)
    assert _declared("uninitialized") == _set(OLD_UNINITIALIZED_FACTORY)
    assert registry.DEVICE_EXACT == _set(OLD_DEVICE_EXACT)
    assert registry.DEVICE_EXACT_WITH_UNIT_ALPHA == _set(OLD_ADD_LIKE)
    assert registry.ELEMENTWISE_OPERATORS == _set(OLD_SHARDING_ELEMENTWISE)
    assert registry.COPY_OPERATORS == _set(OLD_COPIES)
    for constant, old in [(Constant.EMPTY, OLD_EMPTY), (Constant.ZEROS, OLD_ZEROS), (Constant.ONES, OLD_ONES),
                          (Constant.FULL, OLD_FULL)]:
        assert _constant(constant) == _set(old), constant
    assert sharding._FACTORIES == OLD_SHARDING_FACTORIES


def test_the_cost_families_are_those_the_estimate_used() -> None:
    old = {CostFamily.CHOLESKY: OLD_COST_CHOLESKY, CostFamily.EIGH: OLD_COST_EIGH, CostFamily.EINSUM: OLD_COST_EINSUM,
           CostFamily.INDEXING: OLD_COST_INDEXING, CostFamily.MATMUL: OLD_COST_MATMUL,
           CostFamily.NO_DATA: OLD_COST_NO_DATA, CostFamily.QR: OLD_COST_QR, CostFamily.SCAN: OLD_COST_SCAN,
           CostFamily.SEARCHING: OLD_COST_SEARCHING, CostFamily.SOLVE: OLD_COST_SOLVE,
           CostFamily.SORTING: OLD_COST_SORTING, CostFamily.SVD: OLD_COST_SVD,
           CostFamily.TRANSCENDENTAL: OLD_COST_TRANSCENDENTAL}
    assert set(old) == set(CostFamily)
    for family, names in old.items():
        assert _cost(family) == _set(names), family


def test_preconditions_and_draw_costs_are_those_the_analysis_used() -> None:
    assert {name: rule.value for name, rule in registry.PRECONDITIONS.items()} == OLD_PRECONDITIONS
    modelled = {name: (rule.family, rule.rule.value) for name, rule in registry.DRAW_COST_RULES.items()
                if rule is not NOT_MODELLED}
    assert modelled == OLD_DRAW_COSTS


def test_every_draw_has_a_draw_cost_rule_or_says_it_is_not_modelled() -> None:
    for operator in OPERATORS:
        if operator.kind is Kind.RANDOM:
            assert operator.draws is not None, operator.name
            assert (operator.draws.family is None) == (operator.draws.rule is DrawRule.NOT_MODELLED), operator.name
        else:
            assert operator.draws is None, operator.name


def test_the_portable_draws_are_those_portable_recipes_had() -> None:
    described = {name: (sampler.kind, sampler.params, op_info(name).overwrites_self)
                 for name, sampler in registry.DRAW_OPERATORS.items()}
    assert described == OLD_SAMPLERS
    assert registry.FORMAT_1_2_DRAWS == _set(OLD_FORMAT_1_2_DRAWS)
    assert registry.ELEMENTWISE_DRAWS == _set(OLD_ELEMENTWISE_DRAWS)
    assert set(registry.REFUSED_DRAWS) == _set(OLD_REFUSED_DRAWS)
    assert set(registry.SUBSTITUTED_OPERATORS) == _set(OLD_SUBSTITUTED)
    assert registry.CHUNKABLE_FILLS == OLD_CHUNKABLE_FILLS
    assert registry._GENERATOR_OVERLOADS == OLD_GENERATOR_OVERLOADS
    assert {registry.op_name(op) for op in dispatch._FACTORIES} == _set(OLD_RECORD_FACTORIES)
    assert {registry.op_name(op) for op in dispatch._FILLS} == _set(OLD_RECORD_FILLS)


def test_every_portable_draw_has_a_sampler_and_reads_arguments_its_schema_has() -> None:
    for name, sampler in registry.DRAW_OPERATORS.items():
        info = op_info(name)
        assert info.is_random, name
        assert sampler.kind in SAMPLERS | {"permutation", "multinomial"}, name
        assert all(p in info.arg_names for p in sampler.params if isinstance(p, str)), name
    for operator in OPERATORS:
        for overload in operator.overloads:
            assert overload.sampler is None or overload.refused is None, (operator.name, overload.name)
            if overload.sampler is not None or overload.refused is not None:
                assert operator.kind is Kind.RANDOM, operator.name


def test_every_declared_overload_exists_in_this_torch() -> None:
    for operator in OPERATORS:
        for overload in operator.overloads:
            op_info(f"aten.{operator.name}.{overload.name}")
            if overload.generator is not None:
                assert op_info(f"aten.{operator.name}.{overload.generator}").is_random


def test_each_rule_kind_has_an_implementation_in_its_layer() -> None:
    assert set(draw_costs.DRAW_RULES) == set(DrawRule) - {DrawRule.NOT_MODELLED}
    assert set(preconditions.PRECONDITION_CHECKS) == set(Precondition)
    assert set(semantics.SUBSTITUTES) == set(Substitute)
    call_cost = inspect.getsource(cost.call_cost)
    for family in CostFamily:
        assert family in cost.LINALG_FAMILIES or f"CostFamily.{family.name}" in call_cost, family
    base = inspect.getsource(describe.Describer._base)
    assert all(f"Constant.{constant.name}" in base for constant in Constant)
    assert {constant.value for constant in Constant} >= set(sharding._FACTORIES.values())
    assert {name for name, how in registry.RECORD_SHORTCUTS.items() if how is RecordShortcut.SCALAR_FILL} == {
        registry.op_name(op) for op in dispatch._FILLS}


def test_op_info_is_built_from_the_registry_entry() -> None:
    info = op_info("aten.normal_.default")
    assert info.declared is REGISTRY["normal_"]
    assert info.overwrites_self and info.is_random and not info.uninitialized_factory
