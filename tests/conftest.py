"""Test configuration: property-based tests are deterministic in CI, exploratory on request.

The default hypothesis profile, ``ci``, derandomizes every property test, so a CI run never fails
because of an example a previous run did not draw.  ``HYPOTHESIS_PROFILE=explore python -m pytest``
draws fresh random examples (10x as many) to look for new failures; a failure it finds is fixed and
then pinned as an explicit example or regression test.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, database=None)
settings.register_profile("explore", max_examples=1000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
