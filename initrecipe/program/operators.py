"""The allowlist of ATen operators a recipe may name, and what each kind of operator means for replay.

A recipe names operators as ``aten.<name>.<overload>`` strings.  They are resolved only through
:func:`resolve_op`, which accepts a name only when its operator ``<name>`` is listed here: nothing read
from a file ever reaches ``getattr`` on an arbitrary attribute, ``eval`` or an import.
"""

from __future__ import annotations

import functools
from typing import Callable

import torch

from initrecipe.errors import RecipeFormatError, RecordError

__all__ = ["ALLOWED_OPERATORS", "SHAPE_ONLY_OPERATORS", "UNINITIALIZED_LIKE", "OpInfo", "resolve_op", "op_info",
           "generator_overload"]

_FACTORY = """
empty empty_like empty_strided new_empty new_empty_strided zeros zeros_like new_zeros ones ones_like
new_ones full full_like new_full arange linspace logspace eye scalar_tensor lift_fresh lift_fresh_copy
lift tril_indices triu_indices _to_copy clone copy detach alias polar complex
"""
_RANDOM = """
normal normal_ uniform uniform_ bernoulli bernoulli_ rand rand_like randn randn_like randint
randint_like randperm random random_ exponential exponential_ cauchy cauchy_ log_normal log_normal_
geometric geometric_ multinomial poisson
"""
_VIEW = """
view _unsafe_view _reshape_alias as_strided select slice t transpose permute expand unsqueeze squeeze
unbind split split_with_sizes chunk unfold view_as_real view_as_complex diagonal real imag conj
resolve_conj resolve_neg _conj _neg_view narrow movedim unflatten swapaxes swapdims
"""
_POINTWISE = """
fill fill_ zero zero_ copy_ add add_ sub sub_ rsub mul mul_ div div_ true_divide floor_divide
floor_divide_ remainder remainder_ fmod fmod_ pow pow_ float_power neg neg_ abs abs_ sqrt sqrt_ rsqrt
rsqrt_ square exp exp_ exp2 exp2_ expm1 expm1_ log log_ log2 log2_ log10 log10_ log1p log1p_ sin sin_
cos cos_ tan tan_ tanh tanh_ asin asin_ acos acos_ atan atan_ atan2 atan2_ sinh sinh_ cosh cosh_ asinh
asinh_ acosh acosh_ atanh atanh_ sigmoid sigmoid_ logit erf erf_ erfc erfc_ erfinv erfinv_ clamp clamp_
clamp_min clamp_min_ clamp_max clamp_max_ clip clip_ reciprocal reciprocal_ sign sign_ sgn sgn_ floor
floor_ ceil ceil_ round round_ trunc trunc_ frac frac_ where lerp lerp_ addcmul addcmul_ addcdiv
addcdiv_ maximum minimum fmax fmin hypot heaviside nan_to_num nan_to_num_ isnan isinf isfinite isposinf
isneginf signbit eq eq_ ne ne_ lt lt_ le le_ gt gt_ ge ge_ logical_not logical_not_ logical_and
logical_and_ logical_or logical_or_ logical_xor logical_xor_ bitwise_not bitwise_not_ bitwise_and
bitwise_and_ bitwise_or bitwise_or_ bitwise_xor bitwise_xor_ bitwise_left_shift bitwise_right_shift
__and__ __or__ __xor__ __lshift__ __rshift__ __iand__ __ior__ __ixor__ __ilshift__ __irshift__
masked_fill masked_fill_ relu relu_ gelu silu softplus _softmax _log_softmax deg2rad rad2deg
"""
_STRUCTURAL = """
index index_put index_put_ _index_put_impl_ index_select index_fill index_fill_ index_copy index_copy_
index_add index_add_ scatter scatter_ scatter_add scatter_add_ scatter_reduce gather masked_scatter
masked_scatter_ masked_select nonzero repeat repeat_interleave cat stack flip roll rot90 tril tril_ triu
triu_ diag diag_embed diagonal_scatter select_scatter slice_scatter as_strided_scatter sort argsort topk
kthvalue cumsum cumsum_ cumprod cumprod_ sum mean prod std var std_mean var_mean norm linalg_vector_norm
amax amin max min argmax argmin any all outer mm bmm addmm addmv mv dot vdot matmul einsum linalg_qr
linalg_householder_product geqrf orgqr _linalg_svd linalg_svd _linalg_eigh linalg_eigh
linalg_cholesky_ex triangular_solve linalg_solve_triangular _weight_norm _weight_norm_interface
norm_except_dim resize_ count_nonzero bucketize searchsorted histc unique_consecutive _unique2
constant_pad_nd cross expand_copy permute_copy view_copy diagonal_copy t_copy transpose_copy
unsqueeze_copy squeeze_copy select_copy slice_copy alias_copy detach_copy unbind_copy split_copy
split_with_sizes_copy as_strided_copy _unsafe_view_copy
"""

SHAPE_ONLY_OPERATORS: frozenset[str] = frozenset(
    """
    empty_like new_empty new_empty_strided zeros_like new_zeros ones_like new_ones full_like new_full
    rand_like randn_like randint_like
    """.split()
)
"""Operators that read only the shape, dtype and device of their tensor arguments, never their
values: the only ones that may take a meta tensor and return a tensor that holds values."""

UNINITIALIZED_LIKE: frozenset[str] = frozenset("empty_like new_empty new_empty_strided".split())
"""Shape-only operators whose result is uninitialized memory (``Module.to_empty`` calls ``empty_like``)."""

ALLOWED_OPERATORS: frozenset[str] = frozenset(
    (_FACTORY + _RANDOM + _VIEW + _POINTWISE + _STRUCTURAL).split()
)
"""Every ATen operator name (without overload) that a recipe may call."""

# Random operators whose default overload draws from the global generator without taking a
# ``generator`` argument, mapped to the overload that takes one.  The recorder always records the
# explicit-generator overload, so replay never touches the process-global generator.
_GENERATOR_OVERLOADS: dict[tuple[str, str], str] = {
    ("rand", "default"): "generator",
    ("randn", "default"): "generator",
    ("randperm", "default"): "generator",
    ("randint", "default"): "generator",
    ("randint", "low"): "low_generator",
    ("rand_like", "default"): "generator",
    ("randn_like", "default"): "generator",
    ("randint_like", "default"): "generator",
    ("randint_like", "Tensor"): "Tensor_generator",
    ("randint_like", "low_dtype"): "low_generator_dtype",
}

# In-place operators that overwrite every element of their first argument without reading it.
_OVERWRITING_INPLACE = frozenset(
    """fill_ zero_ copy_ normal_ uniform_ bernoulli_ random_ exponential_ cauchy_ log_normal_
    geometric_""".split()
)
# Random operators whose consumption of the generator may depend on the values of their tensor inputs
# (not only on shapes): replay must compute those inputs even when the draw itself is dead.
_VALUE_DEPENDENT_RANDOM = frozenset("multinomial poisson".split())
# Operators whose output shape depends on input values: they cannot be shape-propagated on meta.
_DATA_DEPENDENT_SHAPE = frozenset("nonzero masked_select unique_consecutive _unique2 repeat_interleave".split())
_UNINITIALIZED_FACTORY = frozenset("empty empty_like empty_strided new_empty new_empty_strided".split())


@functools.lru_cache(maxsize=None)
def _generator_type() -> object:
    return torch._C._GeneratorType.get()


class OpInfo:
    """What the analysis and the interpreter need to know about one resolved operator overload."""

    __slots__ = (
        "name",
        "op",
        "schema",
        "is_random",
        "generator_arg",
        "overwrites_self",
        "value_dependent_random",
        "data_dependent_shape",
        "written_args",
        "aliased_outputs",
        "arg_names",
        "takes_default_dtype",
        "uninitialized_factory",
    )

    def __init__(self, name: str, op: torch._ops.OpOverload) -> None:
        self.name = name
        self.op = op
        self.schema = op._schema
        packet = name.split(".")[1]
        self.arg_names = [a.name for a in self.schema.arguments]
        gen_args = [
            a.name
            for a in self.schema.arguments
            if isinstance(a.type, torch.OptionalType) and a.type.getElementType() == _generator_type()
        ]
        self.generator_arg: str | None = gen_args[0] if gen_args else None
        # A factory (no tensor arguments) with a `dtype` argument: left out, torch's default dtype
        # decides (for floating-point results), so a recipe means `float32` there.
        self.takes_default_dtype = "dtype" in self.arg_names and not any(
            "Tensor" in str(a.type) for a in self.schema.arguments
        )
        self.is_random = self.generator_arg is not None
        self.overwrites_self = packet in _OVERWRITING_INPLACE and self.schema.arguments[0].alias_info is not None
        self.value_dependent_random = packet in _VALUE_DEPENDENT_RANDOM or (
            self.is_random
            and packet in ("normal", "bernoulli")
            and any(str(a.type) == "Tensor" for a in self.schema.arguments)
        )
        self.data_dependent_shape = packet in _DATA_DEPENDENT_SHAPE
        # A factory whose result is fresh memory nothing has written yet (replay advises it to use
        # huge pages: initrecipe.support.hugepages).
        self.uninitialized_factory = packet in _UNINITIALIZED_FACTORY
        # Positions of arguments the operator writes to (in-place and out= arguments).
        self.written_args = tuple(
            i
            for i, a in enumerate(self.schema.arguments)
            if a.alias_info is not None and a.alias_info.is_write
        )
        # For each output: index of the argument it aliases (a view or an in-place result), or None.
        aliased: list[int | None] = []
        for ret in self.schema.returns:
            target = None
            if ret.alias_info is not None:
                # A list return such as `Tensor(a)[]` carries its alias set on the element type.
                wanted = set(ret.alias_info.before_set)
                for i, a in enumerate(self.schema.arguments):
                    if a.alias_info is not None and (not wanted or wanted & set(a.alias_info.before_set)):
                        target = i
                        break
            aliased.append(target)
        self.aliased_outputs = tuple(aliased)

    def __repr__(self) -> str:
        return f"OpInfo({self.name})"


def _split(name: str) -> tuple[str, str, str]:
    parts = name.split(".")
    if len(parts) != 3:
        raise ValueError(name)
    return parts[0], parts[1], parts[2]


@functools.lru_cache(maxsize=None)
def op_info(name: str) -> OpInfo:
    """Resolve an ``aten.<name>.<overload>`` string through the allowlist.

    Raises :class:`RecipeFormatError` for a name outside the allowlist or unknown to this torch.
    """
    try:
        namespace, packet, overload = _split(name)
    except ValueError:
        raise RecipeFormatError(
            f"operator name `{name}` is not of the form `aten.<name>.<overload>`"
        ) from None
    if namespace != "aten" or packet not in ALLOWED_OPERATORS:
        raise RecipeFormatError(
            f"unknown operator `{name}`: it is not on initrecipe's allowlist; "
            "the recipe was written by a newer or a modified initrecipe, or is corrupt"
        )
    packet_obj = getattr(torch.ops.aten, packet, None)
    if packet_obj is None or overload not in packet_obj.overloads():
        raise RecipeFormatError(
            f"operator `{name}` does not exist in torch {torch.__version__}; "
            "replay this recipe with the torch version that recorded it"
        )
    return OpInfo(name, getattr(packet_obj, overload))


def resolve_op(name: str) -> torch._ops.OpOverload:
    """Return the ``OpOverload`` for an allowlisted operator name (see :func:`op_info`)."""
    return op_info(name).op


def op_name(op: torch._ops.OpOverload) -> str:
    """The recipe name ``aten.<name>.<overload>`` of an operator overload."""
    return f"{op.namespace}.{op._schema.name.split('::')[1]}.{op._overloadname}"


def generator_overload(op: torch._ops.OpOverload) -> torch._ops.OpOverload | None:
    """For a random operator that implicitly uses the global generator, its explicit-generator overload."""
    packet = op._schema.name.split("::")[1]
    target = _GENERATOR_OVERLOADS.get((packet, op._overloadname))
    if target is None:
        return None
    return getattr(getattr(torch.ops.aten, packet), target)


def check_recordable(op: torch._ops.OpOverload, where: Callable[[], str] | None = None) -> str:
    """The recipe name of ``op``, or :class:`RecordError` when replay could not execute it.

    ``where``, called only to build the error, says where the call happened
    (`` (on tensors of shape ..., called from `file:line` in `fn`)``).
    """
    name = op_name(op)
    if op.namespace != "aten" or name.split(".")[1] not in ALLOWED_OPERATORS:
        raise RecordError(
            f"unsupported operator `{name}` called while recording{where() if where else ''}: "
            "initrecipe cannot replay it. "
            "Build this part of the model outside the recorded constructor, or open an issue asking "
            "for the operator to be added to the allowlist"
        )
    return name
