"""Run a function on N local processes that form a torch.distributed (gloo) world, with a deadline.

Rendezvous goes through a file in a temporary folder (no ports). Each rank returns a JSON-able
value; :func:`run_world` returns them by rank. A rank that raises fails the whole run with its
traceback; a run past its deadline is killed, every process with it.
"""

from __future__ import annotations

import json
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import torch.multiprocessing as mp


def _entry(rank: int, world: int, folder: str, fn: Callable[..., Any], args: tuple) -> None:
    import torch.distributed as dist

    out = Path(folder) / f"rank{rank}.json"
    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=world)
    try:
        result = {"ok": fn(rank, world, *args)}
    except BaseException:  # report it: the parent shows the traceback
        result = {"error": traceback.format_exc()}
    finally:
        try:
            dist.destroy_process_group()
        except Exception:  # pragma: no cover - best effort on the way out
            pass
    out.write_text(json.dumps(result))


def run_world(fn: Callable[..., Any], world: int, *args: Any, timeout: float = 180.0) -> list[Any]:
    """``fn(rank, world, *args)`` on ``world`` processes; the results by rank.

    ``fn`` must be importable by the children (a module-level function of an importable module).
    Raises AssertionError with a rank's traceback when one fails, TimeoutError past ``timeout``.
    """
    with tempfile.TemporaryDirectory(prefix="initrecipe-world-") as folder:
        context = mp.start_processes(_entry, args=(world, folder, fn, args), nprocs=world, join=False,
                                     start_method="spawn")
        deadline = time.monotonic() + timeout
        try:
            while not context.join(timeout=1.0):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"a {world}-process run of {fn.__name__} took longer than {timeout:.0f} s")
        finally:
            for process in context.processes:
                if process.is_alive():
                    process.kill()
                process.join(5)
        results = []
        for rank in range(world):
            path = Path(folder) / f"rank{rank}.json"
            if not path.exists():
                raise AssertionError(f"rank {rank} of {fn.__name__} wrote no result")
            result = json.loads(path.read_text())
            if "error" in result:
                raise AssertionError(f"rank {rank} of {fn.__name__} failed:\n{result['error']}")
            results.append(result["ok"])
        return results

