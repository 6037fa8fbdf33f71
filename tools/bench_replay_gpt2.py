"""GPT-2 124M: eager build vs replay, each in 7 alternating fresh processes (median wall time).

Usage: python tools/bench_replay_gpt2.py   (about 40 s on a 2-core CPU)
Each child imports what it needs before its timer: transformers for eager, initrecipe for replay.
"""
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import initrecipe
from transformers import GPT2Config, GPT2LMHeadModel
RECIPE = str(Path(tempfile.mkdtemp()) / "gpt2.recipe")
initrecipe.record(lambda: GPT2LMHeadModel(GPT2Config()), seed=0, sync_rng=False).save(RECIPE)
EAGER = "import time, torch\nfrom transformers import GPT2Config, GPT2LMHeadModel\ncfg=GPT2Config()\ntorch.manual_seed(0)\nt=time.perf_counter(); m=GPT2LMHeadModel(cfg); print(time.perf_counter()-t)"
REPLAY = f"import time, torch, initrecipe\nt=time.perf_counter(); w=initrecipe.replay({RECIPE!r}); print(time.perf_counter()-t)"
e, r = [], []
for _ in range(7):
    e.append(float(subprocess.run([sys.executable, "-c", EAGER], capture_output=True, text=True).stdout))
    r.append(float(subprocess.run([sys.executable, "-c", REPLAY], capture_output=True, text=True).stdout))
print("eager", [round(x,3) for x in e], "median", round(statistics.median(e),3))
print("replay", [round(x,3) for x in r], "median", round(statistics.median(r),3))
print("ratio", round(statistics.median(r)/statistics.median(e),3))
