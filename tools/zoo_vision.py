#!/usr/bin/env python3
"""The timm and torchvision zoo: record, replay and compare every model in both RNG modes.

Runs with the test suite's torch 2.13.0 (CPU): PyPI's torchvision 0.28.0, the release for torch
2.13, is a CUDA build whose C++ extension cannot load beside the CPU torch, and
``tests/torchvision_shim.py`` lets its Python parts (all the models) import anyway.  Both install
with ``--no-deps`` into a folder of their own, so nothing pulls a second torch:

    python3 -m venv .venv && . .venv/bin/activate && pip install -q torch==2.13.0 -e '.[test]'
    pip install -q --no-deps --target .venv/zoo torchvision==0.28.0 timm==1.0.31
    PYTHONPATH=.venv/zoo flock /tmp/initrecipe-heavy.lock python tools/zoo_vision.py --markdown /tmp/zoo-vision.md

The registries are ``tests/zoo_vision_models.py`` (the test suite checks a subset of them,
``tests/test_zoo_vision.py``).  Per model and mode it prints ``bitwise``/``ok``, ``refused`` (a
clear ``RecordError``) or ``FAILED``, then a table per library with the counts
(``tools/zoo_report.py``); the exit status is 1 when anything FAILED.  The results are in
``docs/ZOO.md``.  (The torch 2.14.1 + torchvision 0.29.1 pair works too, in a venv of its own.)
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from zoo_report import main  # noqa: E402  (puts tests/ on sys.path)
from zoo_vision_models import timm_zoo, torchvision_zoo  # noqa: E402

if __name__ == "__main__":
    sys.exit(main({"timm": timm_zoo, "torchvision": torchvision_zoo}, __doc__.splitlines()[0]))
