"""A QR decomposition whose bits depend only on the input's bits: any device, thread count or torch.

``torch.linalg.qr`` calls LAPACK (CPU) or cuSOLVER/MAGMA (CUDA), whose blocked, multithreaded
kernels sum in an order that changes with the thread count, the device and the library version.
:func:`qr` is an unblocked Householder QR written only with eager elementwise torch operations in
which every output element is *one* correctly rounded IEEE 754 operation (``+ - * /``, ``abs``,
``neg``, ``maximum``, comparisons, ``where``, ``nextafter`` and copies; no fused multiply-add).
Every reduction (column norms, the dot products of a reflector with the columns it is applied
to) is a fixed pairwise tree whose shape depends only on the reduced length.  Square roots are
correctly rounded by :func:`sqrt_rn`, because ``torch.sqrt`` is not (it is only faithful on
torch's CPU kernels).  The result is therefore a pure function of the input's bits;
``schema/FIXED_QR.md`` specifies it operation by operation.

The Householder convention is LAPACK's (``xLARFG``): ``H = I - tau * v v^T`` with ``v[0] = 1`` and
``R[j, j] = -sign(x[0]) * ||x||``, and ``H = I`` (``tau = 0``, ``R[j, j] = x[0]``) when the part
of the column below the diagonal is zero.  The signs of ``R``'s diagonal, and so of ``Q``'s
columns, thus match LAPACK's for generic inputs, and ``orthogonal_``'s sign fix
(``q *= diag(r).sign()``) gives a ``Q`` equal to LAPACK's up to rounding.
"""

from __future__ import annotations

import torch

__all__ = ["qr", "geqrf", "householder_product", "sqrt_rn", "QR_MODES"]

QR_MODES = ("reduced", "complete", "r")
"""The ``mode`` values :func:`qr` accepts, with ``torch.linalg.qr``'s meaning."""

_DTYPES = (torch.float32, torch.float64)


def _largest_power_of_two_below(length: int) -> int:
    """The largest power of two strictly less than ``length`` (``length >= 2``)."""
    return 1 << ((length - 1).bit_length() - 1)


def _tree_sum_(buf: torch.Tensor) -> torch.Tensor:
    """Sum ``buf`` along dim 0 by the fixed pairwise tree, in place; returns ``buf[0:1]`` (a view).

    While ``L > 1`` (``L`` starts at ``buf.shape[0] >= 1``): ``h`` is the largest power of two below
    ``L`` and rows ``i < L - h`` become ``buf[i] + buf[h + i]``; then ``L = h``.  This pairs the
    elements exactly as padding to a power of two with zeros and adding the halves would; rows
    without a partner are passed through unchanged (not ``+ 0``).
    """
    length = buf.shape[0]
    while length > 1:
        half = _largest_power_of_two_below(length)
        rest = length - half
        buf[:rest].add_(buf[half:length])
        length = half
    return buf[0:1]


def _tree_max_(buf: torch.Tensor) -> torch.Tensor:
    """Maximum of ``buf`` along dim 0 by the same tree as :func:`_tree_sum_`, in place; ``buf[0:1]``."""
    length = buf.shape[0]
    while length > 1:
        half = _largest_power_of_two_below(length)
        rest = length - half
        torch.maximum(buf[:rest], buf[half:length], out=buf[:rest])
        length = half
    return buf[0:1]


def _two_sum(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Knuth's error-free sum: ``s = fl(a + b)`` and ``err`` with ``s + err == a + b`` exactly."""
    s = torch.add(a, b)
    bb = torch.sub(s, a)
    err = torch.add(torch.sub(a, torch.sub(s, bb)), torch.sub(b, bb))
    return s, err


def _square_exact(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Dekker's error-free square of binary64 ``a``: ``hi = fl(a*a)`` and ``lo`` with ``hi + lo == a*a``."""
    gamma = torch.mul(a, 134217729.0)  # 2**27 + 1 (Veltkamp's split)
    a_hi = torch.sub(gamma, torch.sub(gamma, a))
    a_lo = torch.sub(a, a_hi)
    hi = torch.mul(a, a)
    cross = torch.mul(torch.mul(a_hi, a_lo), 2.0)
    lo = torch.add(torch.add(torch.sub(torch.mul(a_hi, a_hi), hi), cross), torch.mul(a_lo, a_lo))
    return hi, lo


def sqrt_rn(t: torch.Tensor) -> torch.Tensor:
    """The correctly rounded (IEEE 754 ``squareRoot``) square root of a float32/float64 tensor.

    ``torch.sqrt`` is not correctly rounded everywhere (on torch 2.13's AVX512 CPU kernels about
    17% of float32 and 1% of float64 results are one ulp off), so its result only seeds an exact
    choice between it and its two neighbours (see :func:`_round_sqrt`).  ``0``, ``-0``, ``inf``,
    ``nan`` and negative inputs give ``torch.sqrt``'s exact special results.  The result does
    not depend on the device, the thread count or the torch version, provided ``torch.sqrt`` is
    faithful there (within one ulp), which IEEE-conforming and vendor-library kernels are.
    """
    if t.dtype not in _DTYPES:
        raise ValueError(f"sqrt_rn supports float32 and float64 tensors only, got {t.dtype}")
    return _round_sqrt(t, torch.sqrt(t))


def _round_sqrt(t: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """The correctly rounded square root of ``t``, given ``r`` within one ulp of it.

    * float32: decided in binary64, where ``t``, the midpoints between ``r`` and its neighbours
      and the midpoints' squares are all exact.
    * float64: ``t`` is first scaled by ``2**1000`` or ``2**-1000`` when outside
      ``[2**-900, 2**900]`` (and the result back by ``2**-500`` or ``2**500``; all exact).  For a
      candidate ``c`` and the gap ``u`` to its upper neighbour, ``t > (c + u/2)**2`` holds exactly
      when ``t - c*c - u*c > 0`` (all terms are integer multiples of ``u*u``); that sign is found
      exactly with Dekker's error-free square and Knuth's error-free sums.
    """
    inf = torch.full((), float("inf"), dtype=t.dtype, device=t.device)
    regular = torch.logical_and(torch.gt(t, 0), torch.lt(t, inf))
    if t.dtype == torch.float32:
        up = torch.nextafter(r, inf)
        down = torch.nextafter(r, torch.zeros_like(inf))
        wide = t.double()
        r_wide = r.double()
        mid_up = torch.mul(torch.add(r_wide, up.double()), 0.5)  # midpoints and their squares: exact
        mid_down = torch.mul(torch.add(r_wide, down.double()), 0.5)
        above = torch.gt(wide, torch.mul(mid_up, mid_up))
        below = torch.lt(wide, torch.mul(mid_down, mid_down))
        rounded = torch.where(above, up, torch.where(below, down, r))
        return torch.where(regular, rounded, r)
    small = torch.lt(t, 2.0**-900)
    large = torch.gt(t, 2.0**900)
    one = torch.ones_like(inf)
    t_in = torch.mul(t, torch.where(small, 2.0**1000, torch.where(large, 2.0**-1000, one)))
    r_in = torch.mul(r, torch.where(small, 2.0**500, torch.where(large, 2.0**-500, one)))
    up = torch.nextafter(r_in, inf)
    down = torch.nextafter(r_in, torch.zeros_like(inf))
    candidate = torch.stack([r_in, down])
    gap = torch.stack([torch.sub(up, r_in), torch.sub(r_in, down)])
    hi, lo = _square_exact(candidate)
    residual = torch.sub(t_in, hi)  # exact (Sterbenz): hi is within a factor 2 of t_in
    s, e1 = _two_sum(residual, torch.neg(torch.mul(gap, candidate)))
    s, e2 = _two_sum(s, torch.neg(lo))
    beyond = torch.gt(torch.add(torch.add(s, e1), e2), 0)  # t_in > (candidate + gap/2)**2
    rounded = torch.where(beyond[0], up, torch.where(beyond[1], r_in, down))
    rounded = torch.mul(rounded, torch.where(small, 2.0**-500, torch.where(large, 2.0**500, one)))
    return torch.where(regular, rounded, r)


def _reflector(
    x: torch.Tensor, one: torch.Tensor, zero: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The Householder reflector of column ``x`` (length ``p >= 2``): ``(v, tau, beta)``.

    ``v`` has shape ``(p,)`` with ``v[0] = 1``; ``tau`` and ``beta`` have shape ``(1,)``.
    ``(I - tau v v^T) x = beta e_0``.  All on ``x``'s device, no host synchronisation.
    """
    x0 = x[0:1]
    tail = x[1:]
    # Scale by the largest magnitude so that squares neither overflow nor underflow.
    scale = _tree_max_(torch.abs(x))
    scale = torch.where(scale == zero, one, scale)
    y = torch.div(tail, scale)
    y.mul_(y)
    tail_sq = _tree_sum_(y)  # sum of (x[i] / scale)^2 over i >= 1
    y0 = torch.div(x0, scale)
    norm = torch.mul(scale, sqrt_rn(torch.add(torch.mul(y0, y0), tail_sq)))
    beta = torch.where(x0 >= zero, torch.neg(norm), norm)
    identity = tail_sq == zero  # nothing to annihilate below the diagonal: H = I
    beta = torch.where(identity, x0, beta)
    denominator = torch.where(identity, one, torch.sub(x0, beta))
    v = torch.empty_like(x)
    v[0:1] = one
    torch.where(identity, zero, torch.div(tail, denominator), out=v[1:])
    tau = torch.where(identity, zero, torch.div(torch.sub(beta, x0), torch.where(identity, one, beta)))
    return v, tau, beta


def _apply_reflector_(c: torch.Tensor, v: torch.Tensor, tau: torch.Tensor, work: torch.Tensor) -> None:
    """``c <- (I - tau v v^T) c`` in place, for ``c`` of shape ``(p, q)``; ``work`` holds ``>= p*q``.

    ``w[j] = tree_sum_i(v[i] * c[i, j])``, ``u[j] = tau * w[j]``, ``c[i, j] = c[i, j] - v[i] * u[j]``.
    """
    p, q = c.shape
    products = work[: p * q].view(p, q)
    torch.mul(v[:, None], c, out=products)
    u = torch.mul(tau, _tree_sum_(products))  # (1, q)
    torch.mul(v[:, None], u, out=products)
    c.sub_(products)


def _check(a: object, mode: str) -> torch.Tensor:
    if not isinstance(a, torch.Tensor):
        raise TypeError(f"fixed_qr.qr expects a torch.Tensor, got {type(a).__name__}")
    if mode not in QR_MODES:
        raise ValueError(f"fixed_qr.qr: mode must be one of {QR_MODES}, got {mode!r}")
    if a.dim() != 2:
        hint = " (batched inputs are not supported; call qr once per matrix)" if a.dim() > 2 else ""
        raise ValueError(f"fixed_qr.qr expects a 2-D matrix, got a {a.dim()}-D tensor of shape {tuple(a.shape)}{hint}")
    if a.dtype not in _DTYPES:
        raise ValueError(f"fixed_qr.qr supports float32 and float64 matrices only, got {a.dtype}")
    return a


def qr(a: torch.Tensor, mode: str = "reduced") -> tuple[torch.Tensor, torch.Tensor]:
    """QR decomposition of a 2-D float32/float64 matrix with bitwise-reproducible results.

    Same contract as ``torch.linalg.qr`` for a single matrix ``a`` of shape ``(m, n)``, with
    ``k = min(m, n)``:

    * ``mode="reduced"``: ``Q`` is ``(m, k)`` with orthonormal columns, ``R`` is ``(k, n)``;
    * ``mode="complete"``: ``Q`` is ``(m, m)`` orthogonal, ``R`` is ``(m, n)``;
    * ``mode="r"``: ``Q`` is an empty tensor of shape ``(0,)``, ``R`` is ``(k, n)``.

    ``R`` is upper triangular with exact zeros below the diagonal and ``Q @ R`` approximates
    ``a``.  Both have ``a``'s dtype and device.  The bits of ``Q`` and ``R`` depend only on the
    bits of ``a`` and on ``mode`` (not on the memory layout of ``a``, the device, the thread count
    or the torch version), provided subnormal numbers are not flushed to zero; the algorithm is
    specified in ``schema/FIXED_QR.md``.  Column ``j`` of ``R`` and of ``Q`` depends only on
    columns ``0..j`` of ``a``, and the reduced ``Q`` is the leading ``k`` columns of the complete
    one, bit for bit.  The result is not differentiable (autograd is off inside).

    Raises ``TypeError`` for a non-tensor and ``ValueError`` for an unknown ``mode``, an input that
    is not 2-D (batched inputs are refused), or a dtype other than float32/float64.
    """
    _check(a, mode)
    m, n = a.shape
    k = min(m, n)
    with torch.no_grad():
        work_matrix = torch.empty((m, n), dtype=a.dtype, device=a.device)
        work_matrix.copy_(a.detach())
        one = torch.ones((), dtype=a.dtype, device=a.device)
        zero = torch.zeros((), dtype=a.dtype, device=a.device)
        q_cols = 0 if mode == "r" else (m if mode == "complete" else k)
        work = torch.empty(max(m * max(n - 1, q_cols), 1), dtype=a.dtype, device=a.device)
        reflectors: list[tuple[torch.Tensor, torch.Tensor] | None] = []
        for j in range(k):
            if m - j < 2:  # a 1-element column: H = I, nothing to do
                reflectors.append(None)
                continue
            v, tau, beta = _reflector(work_matrix[j:, j], one, zero)
            reflectors.append((v, tau))
            if j + 1 < n:
                _apply_reflector_(work_matrix[j:, j + 1 :], v, tau, work)
            work_matrix[j, j : j + 1] = beta
        r = torch.triu(work_matrix if mode == "complete" else work_matrix[:k])
        if mode == "r":
            return torch.empty((0,), dtype=a.dtype, device=a.device), r
        q = torch.zeros((m, q_cols), dtype=a.dtype, device=a.device)
        q.diagonal().fill_(1)
        for j in range(k - 1, -1, -1):
            reflector = reflectors[j]
            if reflector is not None:
                _apply_reflector_(q[j:, j:], reflector[0], reflector[1], work)
        return q, r


def _column_major(t: torch.Tensor) -> torch.Tensor:
    """``t`` with each matrix stored column-major and batches contiguous, as LAPACK leaves its results."""
    *batch, m, n = t.shape
    stride = [1, max(m, 1)]
    size = m * n
    for b in reversed(batch):
        stride.insert(0, size)
        size *= b
    out = torch.empty_strided(tuple(t.shape), tuple(stride[-t.dim():]), dtype=t.dtype, device=t.device)
    out.copy_(t)
    return out


def _matrices(a: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(a, torch.Tensor):
        raise TypeError(f"fixed_qr.{name} expects a torch.Tensor, got {type(a).__name__}")
    if a.dim() < 2:
        raise ValueError(f"fixed_qr.{name} expects matrices (2 or more dimensions), got shape {tuple(a.shape)}")
    if a.dtype not in _DTYPES:
        raise ValueError(f"fixed_qr.{name} supports float32 and float64 matrices only, got {a.dtype}")
    return a


def geqrf(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.geqrf`` with bitwise-reproducible results: the factorization of :func:`qr` in
    LAPACK's compact form.

    For each matrix of ``a`` (``m x n``, ``k = min(m, n)``): ``R`` on and above the diagonal, the
    Householder vectors below it (``v[0] = 1`` implied), and ``tau`` of shape ``(..., k)``; the
    reflectors are :func:`qr`'s, so ``householder_product(*geqrf(a))`` is :func:`qr`'s reduced
    ``Q`` (for ``m >= n``).  Outputs are column-major like LAPACK's.  Batches are factorized one
    matrix after another.
    """
    _matrices(a, "geqrf")
    *batch, m, n = a.shape
    k = min(m, n)
    with torch.no_grad():
        flat = a.detach().reshape(-1, m, n)
        factors = torch.empty((flat.shape[0], m, n), dtype=a.dtype, device=a.device)
        taus = torch.zeros((flat.shape[0], k), dtype=a.dtype, device=a.device)
        one = torch.ones((), dtype=a.dtype, device=a.device)
        zero = torch.zeros((), dtype=a.dtype, device=a.device)
        work = torch.empty(max(m * max(n - 1, 1), 1), dtype=a.dtype, device=a.device)
        for b in range(flat.shape[0]):
            w = factors[b]
            w.copy_(flat[b])
            for j in range(k):
                if m - j < 2:  # a 1-element column: H = I, tau = 0
                    continue
                v, tau, beta = _reflector(w[j:, j].clone(), one, zero)
                if j + 1 < n:
                    _apply_reflector_(w[j:, j + 1 :], v, tau, work)
                w[j, j : j + 1] = beta
                w[j + 1 :, j] = v[1:]
                taus[b, j : j + 1] = tau
        return _column_major(factors.reshape(a.shape)), taus.reshape(*batch, k)


def householder_product(a: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    """``torch.linalg.householder_product`` (``orgqr``) with bitwise-reproducible results: the
    first ``n`` columns of ``H_0 H_1 ... H_{k-1}``, ``H_j = I - tau_j v_j v_j^T`` with ``v_j``
    stored below the diagonal of column ``j`` of ``a`` (``v_j[0] = 1``), accumulated from the last
    reflector to the first exactly as :func:`qr` accumulates ``Q``.  Column-major like LAPACK's."""
    _matrices(a, "householder_product")
    *batch, m, n = a.shape
    k = tau.shape[-1]
    if tau.dtype != a.dtype or tuple(tau.shape[:-1]) != tuple(batch) or not k <= n <= m:
        raise ValueError(
            f"fixed_qr.householder_product needs tau of shape (..., k) with k <= n <= m and a's dtype; got a "
            f"{tuple(a.shape)} {a.dtype}, tau {tuple(tau.shape)} {tau.dtype}"
        )
    with torch.no_grad():
        flat = a.detach().reshape(-1, m, n)
        flat_tau = tau.detach().reshape(-1, k)
        out = torch.zeros((flat.shape[0], m, n), dtype=a.dtype, device=a.device)
        work = torch.empty(max(m * n, 1), dtype=a.dtype, device=a.device)
        for b in range(flat.shape[0]):
            q = out[b]
            q.diagonal().fill_(1)
            for j in range(k - 1, -1, -1):
                v = torch.empty(m - j, dtype=a.dtype, device=a.device)
                v[0:1] = 1
                v[1:] = flat[b, j + 1 :, j]
                _apply_reflector_(q[j:, j:], v, flat_tau[b, j : j + 1], work)
        return _column_major(out.reshape(a.shape))
