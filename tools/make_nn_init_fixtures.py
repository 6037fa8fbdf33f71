#!/usr/bin/env python3
"""Record every ``torch.nn.init`` function under the installed torch into ``tests/nn_init/``.

    PYTHONPATH=. python tools/make_nn_init_fixtures.py           # write tests/nn_init/torch-<version>-<rng>.recipe
    PYTHONPATH=. python tools/make_nn_init_fixtures.py --ops     # print each tensor's operator sequence, write nothing

``describe`` (``initrecipe show``) names an initializer by the operators the recorder wrote for
it, and those depend on the torch release: ``torch/nn/init.py`` is the same file in 2.13.0, 2.14.1
and 2.15.0, but 2.15.0 lowers ``sparse_``'s ``tensor[rows, col] = 0`` to ``index_fill_`` where
2.13 and 2.14 wrote ``index_put_``.  Run this under each supported torch (the venvs of
``tools/test_torch_versions.sh``); ``tests/test_nn_init_fixtures.py`` then checks every release's
recordings under whichever torch runs the tests.  ``--ops`` output, diffed between two venvs, shows
what a new release changed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import initrecipe  # noqa: E402
from initrecipe.analysis.lineage import analyse  # noqa: E402

from every_init import EveryInit  # noqa: E402

FIXTURES = ROOT / "tests" / "nn_init"
RNG_MODES = ("torch", "portable")


def torch_version() -> str:
    """The installed torch's release, without the local build tag (``2.15.0``)."""
    return torch.__version__.split("+")[0]


def fixture_path(version: str, rng: str) -> Path:
    return FIXTURES / f"torch-{version}-{rng}.recipe"


def op_sequences(recipe: initrecipe.Recipe) -> dict[str, list[str]]:
    """Each tensor's live program as its operator names, oldest first (what ``describe`` matches)."""
    out: dict[str, list[str]] = {}
    for lineage in analyse(recipe):
        ops: list[str] = []
        step = lineage.step
        while step is not None:
            ops.append(step.op)
            step = step.prev
        out[lineage.entry.name] = ops[::-1]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ops", action="store_true", help="print the operator sequences, write nothing")
    args = parser.parse_args(argv)
    version = torch_version()
    for rng in RNG_MODES:
        recipe = initrecipe.record(EveryInit, seed=0, rng=rng)
        if args.ops:
            for name, ops in op_sequences(recipe).items():
                print(f"{version} {rng} {name}: {' '.join(ops)}")
            continue
        FIXTURES.mkdir(exist_ok=True)
        path = fixture_path(version, rng)
        recipe.save(path)
        print(f"wrote {path.relative_to(ROOT)} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
