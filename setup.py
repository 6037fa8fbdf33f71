"""Build script for initrecipe's optional C extensions.

* ``initrecipe.rng.portable._portable_kernel``: the portable samplers.  Without it ``initrecipe.rng.portable.samplers``
  falls back to its eager-torch reference implementation (same bits, slower).
* ``initrecipe.rng.torch._mt19937``: jump-ahead for torch's CPU generator.  Without it rng="torch" replays
  and recordings advance the generator by drawing, as eager does (same bits, slower).

All project metadata lives in pyproject.toml; this file only declares the extensions.  Both are
optional: without a working C compiler the package still installs.  Its results are specified bit for bit (schema/PORTABLE_RNG.md), so the flags below
forbid floating-point contraction and fast-math; the AVX-512/AVX2 code paths come from GCC
function multiversioning inside the source, not from -march flags, so a built wheel runs on any
x86-64 CPU.
"""

from __future__ import annotations

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

# -fno-fast-math first: it resets the flags below, and cancels a -ffast-math from CFLAGS (the source
# refuses to compile under fast-math anyway).
# -ffp-contract=off: no fused multiply-add (GCC's default for GNU C contracts a*b+c).
# -fno-math-errno, -fno-trapping-math: no errno or floating-point-trap semantics, which changes no
# value but lets the vectoriser evaluate both sides of a select.
UNIX_FLAGS = ["-O3", "-std=gnu11", "-fno-fast-math", "-ffp-contract=off", "-fno-math-errno", "-fno-trapping-math"]
MSVC_FLAGS = ["/O2", "/fp:strict"]


class BuildPortableKernel(build_ext):
    """build_ext that picks the floating-point-exact flags for the compiler in use."""

    def build_extensions(self) -> None:
        flags = MSVC_FLAGS if self.compiler.compiler_type == "msvc" else UNIX_FLAGS
        for ext in self.extensions:
            ext.extra_compile_args = list(flags)
        super().build_extensions()


setup(
    ext_modules=[
        Extension(
            "initrecipe.rng.portable._portable_kernel",
            sources=["initrecipe/rng/portable/_portable_kernel.c"],
            optional=True,
        ),
        Extension(
            "initrecipe.rng.torch._mt19937",
            sources=["initrecipe/rng/torch/_mt19937.c"],
            depends=["initrecipe/rng/torch/_mt19937_constants.h"],
            optional=True,
        ),
    ],
    cmdclass={"build_ext": BuildPortableKernel},
)
