"""initrecipe.rng.portable.fixed_qr: a Householder QR whose bits depend only on the input (schema/FIXED_QR.md)."""

from __future__ import annotations

import hashlib
import math
import struct
from typing import Callable

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from initrecipe.rng.portable.fixed_qr import _round_sqrt, qr, sqrt_rn

DTYPES = (torch.float32, torch.float64)
MODES = ("reduced", "complete", "r")


def _bits(t: torch.Tensor) -> torch.Tensor:
    """The raw bit patterns of a float tensor (so -0.0 and +0.0 differ)."""
    return t.contiguous().view(torch.int32 if t.dtype == torch.float32 else torch.int64)


def _bit_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(_bits(a), _bits(b))


def _random(m: int, n: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    return torch.randn(m, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


def _eps(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).eps


def _max_abs(t: torch.Tensor) -> float:
    return t.abs().max().item() if t.numel() else 0.0


def _check_factorization(a: torch.Tensor, mode: str) -> None:
    q, r = qr(a, mode)
    ql, rl = torch.linalg.qr(a, mode=mode)
    assert q.shape == ql.shape and r.shape == rl.shape
    assert q.dtype == r.dtype == a.dtype and q.device == r.device == a.device
    assert torch.isfinite(r).all() and torch.isfinite(q).all()
    assert torch.equal(r.tril(-1), torch.zeros_like(r.tril(-1)))  # exactly upper triangular
    if mode == "r":
        assert q.shape == (0,)
        return
    m, n = a.shape
    scale = max(_max_abs(a), 1.0) * max(m, n, 1)
    eye = torch.eye(q.shape[1], dtype=a.dtype)
    assert _max_abs(q.T @ q - eye) <= 20 * max(m, 1) * _eps(a.dtype)
    assert _max_abs(q @ r - a) <= 20 * scale * _eps(a.dtype)


# --- properties ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", [(1, 1), (5, 1), (1, 5), (6, 4), (4, 6), (7, 7), (33, 17), (17, 33), (0, 3), (3, 0)])
def test_factorization_properties(shape: tuple[int, int], mode: str, dtype: torch.dtype) -> None:
    _check_factorization(_random(*shape, dtype, seed=sum(shape)), mode)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", MODES)
def test_rank_deficient_and_zero_columns(mode: str, dtype: torch.dtype) -> None:
    a = _random(8, 6, dtype, seed=3)
    a[:, 0] = 0  # a zero first column
    a[:, 3] = a[:, 1] * 2  # a dependent column
    a[5:, 4] = 0
    _check_factorization(a, mode)
    _check_factorization(a.T.contiguous(), mode)
    _check_factorization(torch.zeros(5, 3, dtype=dtype), mode)
    _check_factorization(torch.ones(4, 4, dtype=dtype), mode)  # rank one


@pytest.mark.parametrize("dtype", DTYPES)
def test_already_triangular_input_is_left_alone(dtype: torch.dtype) -> None:
    a = _random(5, 5, dtype, seed=9).triu()
    q, r = qr(a)
    assert torch.equal(q, torch.eye(5, dtype=dtype)) and torch.equal(r, a)
    q, r = qr(torch.tensor([[-3.0]], dtype=dtype))
    assert q.item() == 1.0 and r.item() == -3.0  # LAPACK's 1x1 convention: H = I


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("magnitude", [1e30, 1e-30])
def test_extreme_magnitudes_do_not_overflow(magnitude: float, dtype: torch.dtype) -> None:
    a = _random(9, 5, dtype, seed=4) * magnitude
    q, r = qr(a)
    assert torch.isfinite(q).all() and torch.isfinite(r).all()
    assert (q.T @ q - torch.eye(5, dtype=dtype)).abs().max().item() < 1e-5
    assert ((q @ r - a).abs().max() / a.abs().max()).item() < 1e-5


@settings(max_examples=60, deadline=None)
@given(
    m=st.integers(1, 12),
    n=st.integers(1, 12),
    seed=st.integers(0, 2**31 - 1),
    dtype=st.sampled_from(DTYPES),
    mode=st.sampled_from(MODES),
    integers=st.booleans(),
)
def test_factorization_properties_fuzzed(
    m: int, n: int, seed: int, dtype: torch.dtype, mode: str, integers: bool
) -> None:
    a = _random(m, n, dtype, seed)
    if integers:  # small integers: ties, exact zeros below the diagonal, rank deficiency
        a = torch.round(a * 1.5)
    _check_factorization(a, mode)


# --- bitwise determinism ------------------------------------------------------------------------


@pytest.mark.parametrize("m, n, dtype", [(512, 512, torch.float32), (600, 300, torch.float64)])
def test_bitwise_identical_for_one_and_two_threads(m: int, n: int, dtype: torch.dtype) -> None:
    a = _random(m, n, dtype, seed=11)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert torch.get_num_threads() == 1
        q1, r1 = qr(a)
        torch.set_num_threads(2)
        assert torch.get_num_threads() == 2  # the big steps' ops exceed torch's 32768-element grain
        q2, r2 = qr(a)
    finally:
        torch.set_num_threads(before)
    assert torch.get_num_threads() == before
    assert _bit_equal(q1, q2) and _bit_equal(r1, r2)


@pytest.mark.parametrize("dtype", DTYPES)
def test_bitwise_independent_of_memory_layout(dtype: torch.dtype) -> None:
    a = _random(40, 24, dtype, seed=5)
    big = torch.zeros(80, 72, dtype=dtype)
    big[::2, 1::3] = a
    for mode in MODES:
        q, r = qr(a, mode)
        for other in (a.T.contiguous().T, big[::2, 1::3], a.clone()):
            q2, r2 = qr(other, mode)
            assert _bit_equal(q, q2) and _bit_equal(r, r2)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(30, 20), (12, 25)])
def test_bitwise_identical_in_column_chunks(shape: tuple[int, int], dtype: torch.dtype) -> None:
    """Columns are independent lanes: the leading columns' results do not depend on how many follow."""
    a = _random(*shape, dtype, seed=6)
    m, n = shape
    q, r = qr(a)
    k = min(m, n)
    for c in (1, 2, 7, k, n):
        qc, rc = qr(a[:, :c])
        kc = min(m, c)
        assert _bit_equal(rc, r[:kc, :c])
        assert _bit_equal(qc, q[:, :kc])


@pytest.mark.parametrize("dtype", DTYPES)
def test_modes_agree_bitwise(dtype: torch.dtype) -> None:
    for shape in ((9, 5), (5, 9), (6, 6)):
        a = _random(*shape, dtype, seed=7)
        k = min(shape)
        q, r = qr(a, "reduced")
        q_full, r_full = qr(a, "complete")
        _, r_only = qr(a, "r")
        assert _bit_equal(q_full[:, :k], q) and _bit_equal(r_full[:k], r) and _bit_equal(r_only, r)
        assert not r_full[k:].any()


def test_meta_tensors_give_shapes_without_host_syncs() -> None:
    q, r = qr(torch.empty(7, 3, device="meta"), "complete")
    assert q.shape == (7, 7) and r.shape == (7, 3) and q.is_meta and r.is_meta


def _little_endian_bytes(t: torch.Tensor) -> bytes:
    code = "f" if t.dtype == torch.float32 else "d"
    return struct.pack(f"<{t.numel()}{code}", *t.flatten().tolist())


def _regression_input(m: int, n: int, dtype: torch.dtype) -> torch.Tensor:
    """Small integers (exact in any float dtype), full rank but for a zero column; no RNG involved."""
    i = torch.arange(m, dtype=torch.int64)[:, None]
    j = torch.arange(n, dtype=torch.int64)[None, :]
    a = ((7 * i * i + 3 * j * j + 5 * i * j + i + 2 * j) % 23 - 11).to(dtype)
    a[:, 2] = 0
    return a


def _regression_digest(m: int, n: int, dtype: torch.dtype, mode: str) -> str:
    q, r = qr(_regression_input(m, n, dtype), mode)
    return hashlib.sha256(_little_endian_bytes(q) + _little_endian_bytes(r)).hexdigest()


# sha256(little-endian Q bytes || little-endian R bytes); also listed in schema/FIXED_QR.md.
REGRESSION_DIGESTS = {
    (7, 5, "float32", "reduced"): "36f8d4e6df4c0f253bd30101f7ef9fe7ed6861248031d28e68f83a753ad4286c",
    (7, 5, "float32", "complete"): "d86f575b13761ad5d66ee6d6a14990da88b0392a528e5df6c873713c74958994",
    (7, 5, "float64", "reduced"): "34505512a9dc71739684c729bc2bdbb8204e0a9cfc497b635c8b76ca0701215f",
    (7, 5, "float64", "complete"): "74cace37c6f88403d4d38607e549579bee8a92dcd5218a903d2513aa6080ec58",
    (4, 6, "float32", "reduced"): "70317a0c9f8d25e13021b5b11fb708eab06ff22d2025b439e0bd5c58b757bc76",
    (4, 6, "float64", "reduced"): "5037149066203c75adfc7222c37dadbd18d8356d84941d33f7acac823636c3d5",
}


@pytest.mark.parametrize("key", sorted(REGRESSION_DIGESTS))
def test_regression_digest(key: tuple[int, int, str, str]) -> None:
    m, n, dtype_name, mode = key
    assert _regression_digest(m, n, getattr(torch, dtype_name), mode) == REGRESSION_DIGESTS[key]


# --- the correctly rounded square root ----------------------------------------------------------


def _sqrt_reference(values: list[float], dtype: torch.dtype) -> torch.Tensor:
    """math.sqrt is IEEE-exact in binary64; rounding it to binary32 is exact for binary32 inputs."""
    return torch.tensor([math.sqrt(v) for v in values], dtype=torch.float64).to(dtype)


def _sqrt_cases(dtype: torch.dtype) -> torch.Tensor:
    g = torch.Generator().manual_seed(12)
    low, high = (-149, 128) if dtype == torch.float32 else (-1074, 1024)  # subnormals to overflow
    spread = (torch.rand(50_000, generator=g, dtype=torch.float64) * (high - low) + low).exp2().to(dtype)
    # Near the squares of midpoints between neighbouring representable numbers, where rounding is hardest.
    c = (torch.rand(20_000, generator=g, dtype=torch.float64) * 15).exp2().to(dtype).double()
    c_next = torch.nextafter(c.to(dtype), torch.tensor(math.inf, dtype=dtype)).double()
    if dtype == torch.float32:
        near = (((c + c_next) / 2) ** 2).to(dtype)  # exact in binary64, then one rounding
    else:
        near = torch.tensor([(x + (y - x) / 2) ** 2 for x, y in zip(c.tolist(), c_next.tolist())], dtype=dtype)
    squares = (torch.arange(1, 5000, dtype=torch.float64) ** 2).to(dtype)
    inf = torch.tensor(math.inf, dtype=dtype)
    around = torch.cat([near, squares])
    return torch.cat([spread, around, torch.nextafter(around, inf), torch.nextafter(around, torch.zeros_like(inf))])


@pytest.mark.parametrize("dtype", DTYPES)
def test_sqrt_rn_is_correctly_rounded(dtype: torch.dtype) -> None:
    x = _sqrt_cases(dtype)
    expected = _sqrt_reference(x.tolist(), dtype)
    got = sqrt_rn(x)
    assert _bit_equal(got, expected)
    # Whatever faithful square root another device or torch version supplies, the result is the same.
    inf = torch.tensor(math.inf, dtype=dtype)
    for seed in (torch.nextafter(expected, inf), torch.nextafter(expected, torch.zeros_like(inf))):
        assert _bit_equal(_round_sqrt(x, seed), expected)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sqrt_rn_special_values(dtype: torch.dtype) -> None:
    x = torch.tensor([0.0, -0.0, math.inf, 1.0, 4.0, torch.finfo(dtype).tiny, torch.finfo(dtype).max], dtype=dtype)
    assert _bit_equal(sqrt_rn(x), _sqrt_reference(x.tolist(), dtype))
    assert torch.isnan(sqrt_rn(torch.tensor([math.nan, -1.0], dtype=dtype))).all()


# --- an independent scalar implementation of schema/FIXED_QR.md --------------------------------


def _to_float32(x: float) -> float:
    return struct.unpack("<f", struct.pack("<f", x))[0]


def _reference_qr(rows: list[list[float]], mode: str, single: bool) -> tuple[list[list[float]], list[list[float]]]:
    """schema/FIXED_QR.md with Python floats (binary64); ``single`` rounds each result to binary32.

    Rounding a binary64 result of + - * / sqrt of binary32 operands to binary32 is the correctly
    rounded binary32 result (the double-rounding theorem), so this reproduces both dtypes' bits.
    """
    rnd: Callable[[float], float] = _to_float32 if single else (lambda x: x)

    def tree(values: list[float], op: Callable[[float, float], float]) -> float:
        values = list(values)
        length = len(values)
        while length > 1:
            half = 1 << ((length - 1).bit_length() - 1)
            for i in range(length - half):
                values[i] = op(values[i], values[half + i])
            length = half
        return values[0]

    def add(x: float, y: float) -> float:
        return rnd(x + y)

    def sub(x: float, y: float) -> float:
        return rnd(x - y)

    def mul(x: float, y: float) -> float:
        return rnd(x * y)

    def div(x: float, y: float) -> float:
        return rnd(x / y)

    def apply(c: list[list[float]], i0: int, c0: int, c1: int, v: list[float], tau: float) -> None:
        u = []
        for col in range(c0, c1):
            w = tree([mul(v[i], c[i0 + i][col]) for i in range(len(v))], add)
            u.append(mul(tau, w))
        for i in range(len(v)):
            for col in range(c0, c1):
                c[i0 + i][col] = sub(c[i0 + i][col], mul(v[i], u[col - c0]))

    m, n = len(rows), len(rows[0])
    k = min(m, n)
    w_mat = [list(row) for row in rows]
    reflectors: list[tuple[list[float], float] | None] = []
    for j in range(k):
        p = m - j
        if p == 1:
            reflectors.append(None)
            continue
        x = [w_mat[j + i][j] for i in range(p)]
        s = tree([abs(t) for t in x], max)
        if s == 0:
            s = 1.0
        sigma = tree([mul(div(t, s), div(t, s)) for t in x[1:]], add)
        if sigma == 0:
            beta, tau, v = x[0], 0.0, [1.0] + [0.0] * (p - 1)
        else:
            y0 = div(x[0], s)
            nu = mul(s, rnd(math.sqrt(add(mul(y0, y0), sigma))))
            beta = -nu if x[0] >= 0 else nu
            d = sub(x[0], beta)
            v = [1.0] + [div(t, d) for t in x[1:]]
            tau = div(sub(beta, x[0]), beta)
        reflectors.append((v, tau))
        if j + 1 < n:
            apply(w_mat, j, j + 1, n, v, tau)
        w_mat[j][j] = beta
    r_rows = m if mode == "complete" else k
    r = [[w_mat[i][c] if c >= i else 0.0 for c in range(n)] for i in range(r_rows)]
    q_cols = m if mode == "complete" else k
    q = [[1.0 if i == c else 0.0 for c in range(q_cols)] for i in range(m)]
    for j in range(k - 1, -1, -1):
        reflector = reflectors[j]
        if reflector is not None:
            apply(q, j, j, q_cols, reflector[0], reflector[1])
    return q, r


@settings(max_examples=40, deadline=None)
@given(
    m=st.integers(1, 9),
    n=st.integers(1, 9),
    seed=st.integers(0, 2**31 - 1),
    dtype=st.sampled_from(DTYPES),
    mode=st.sampled_from(("reduced", "complete")),
    integers=st.booleans(),
)
def test_matches_scalar_reference_of_the_spec(
    m: int, n: int, seed: int, dtype: torch.dtype, mode: str, integers: bool
) -> None:
    a = _random(m, n, dtype, seed)
    if integers:
        a = torch.round(a * 1.5)
    q, r = qr(a, mode)
    q_ref, r_ref = _reference_qr(a.tolist(), mode, single=dtype == torch.float32)
    assert _bit_equal(q, torch.tensor(q_ref, dtype=dtype).reshape(q.shape))
    assert _bit_equal(r, torch.tensor(r_ref, dtype=dtype).reshape(r.shape))


@pytest.mark.parametrize("dtype", DTYPES)
def test_regression_input_matches_scalar_reference(dtype: torch.dtype) -> None:
    for m, n in ((7, 5), (4, 6)):
        a = _regression_input(m, n, dtype)
        q, r = qr(a, "complete")
        q_ref, r_ref = _reference_qr(a.tolist(), "complete", single=dtype == torch.float32)
        assert _bit_equal(q, torch.tensor(q_ref, dtype=dtype)) and _bit_equal(r, torch.tensor(r_ref, dtype=dtype))


# --- agreement with LAPACK after orthogonal_'s sign fix -----------------------------------------


QrFunction = Callable[..., tuple[torch.Tensor, torch.Tensor]]


def _orthogonal(shape: tuple[int, ...], seed: int, qr_fn: QrFunction) -> torch.Tensor:
    """``torch.nn.init.orthogonal_``'s algorithm (gain 1) with a pluggable QR."""
    rows = shape[0]
    cols = math.prod(shape) // rows
    flattened = torch.empty(rows, cols).normal_(0, 1, generator=torch.Generator().manual_seed(seed))
    if rows < cols:
        flattened.t_()
    q, r = qr_fn(flattened)
    d = torch.diag(r, 0)
    q *= d.sign()
    if rows < cols:
        q.t_()
    return q.reshape(shape)


@pytest.mark.parametrize("shape", [(256, 64), (64, 256), (128, 128), (300, 200), (16, 3, 3, 3), (1000, 10)])
def test_sign_fixed_q_matches_lapack_and_orthogonal_(shape: tuple[int, ...]) -> None:
    for seed in range(2):
        ours = _orthogonal(shape, seed, qr)
        lapack = _orthogonal(shape, seed, torch.linalg.qr)
        eager = torch.empty(shape)
        torch.nn.init.orthogonal_(eager, generator=torch.Generator().manual_seed(seed))
        assert torch.equal(lapack, eager)  # the helper really is orthogonal_'s algorithm
        assert (ours - lapack).abs().max().item() < 1e-5
        flat = ours.reshape(shape[0], -1)
        gram = flat @ flat.T if flat.shape[0] <= flat.shape[1] else flat.T @ flat
        assert (gram - torch.eye(gram.shape[0])).abs().max().item() < 1e-5


def test_sign_fixed_q_matches_lapack_float64() -> None:
    a = _random(200, 120, torch.float64, seed=8)
    q, r = qr(a)
    ql, rl = torch.linalg.qr(a)
    fixed = q * torch.diag(r).sign()
    fixed_lapack = ql * torch.diag(rl).sign()
    assert (fixed - fixed_lapack).abs().max().item() < 1e-12


# --- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad, message",
    [
        (torch.zeros(2, 3, 3), "batched"),
        (torch.zeros(3), "2-D"),
        (torch.tensor(1.0), "2-D"),
        (torch.zeros(3, 3, dtype=torch.int64), "float32 and float64"),
        (torch.zeros(3, 3, dtype=torch.bool), "float32 and float64"),
        (torch.zeros(3, 3, dtype=torch.complex64), "float32 and float64"),
        (torch.zeros(3, 3, dtype=torch.float16), "float32 and float64"),
    ],
)
def test_refuses_unsupported_inputs(bad: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        qr(bad)


def test_refuses_unknown_mode_and_non_tensors() -> None:
    with pytest.raises(ValueError, match="mode"):
        qr(torch.zeros(3, 3), mode="full")
    with pytest.raises(TypeError):
        qr([[1.0, 0.0], [0.0, 1.0]])  # type: ignore[arg-type]
