"""Test configuration: property-based tests are deterministic in CI, exploratory on request.

The default hypothesis profile, ``ci``, derandomizes every property test, so a CI run never fails
because of an example a previous run did not draw.  ``HYPOTHESIS_PROFILE=explore python -m pytest``
draws fresh random examples (10x as many) to look for new failures; a failure it finds is fixed and
then pinned as an explicit example or regression test.
"""

from __future__ import annotations

import os
import sys

from hypothesis import settings

sys.path.insert(0, os.path.dirname(__file__))

from torchvision_shim import import_torchvision  # noqa: E402

settings.register_profile("ci", derandomize=True, database=None)
settings.register_profile("explore", max_examples=1000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# transformers, diffusers and timm import torchvision by themselves when it is installed; PyPI's
# torchvision 0.28.0 imports beside the CPU torch 2.13.0 only through the shim, so import it so
# first (tests/torchvision_shim.py).  Without torchvision installed nothing imports it.
try:
    import_torchvision()
except ImportError:
    pass
