"""Portable replay on a CUDA device: bitwise check against the CPU, and throughput against ``fill_``.

Usage: python tools/bench_portable_gpu.py [--model llama-1b|llama-7b|llama-tiny] [--json OUT]

For a machine with a GPU (none was available when this was written, so it has not been run yet):

1. replays the portable golden fixture and a small Llama on ``cuda`` and on the CPU and compares
   every tensor bit for bit (the same check as ``tests/test_portable.py::test_cpu_and_cuda_give_identical_bits``);
2. times a portable replay of the model on the device (synchronized, after one warm-up replay) and
   ``fill_`` of the same bytes on the device in the same run, and prints the replay's throughput as
   a fraction of that bandwidth (the issue's target: at least 25%).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bench_record_replay as base  # noqa: E402

import initrecipe  # noqa: E402

GOLDEN = Path(__file__).resolve().parent.parent / "tests" / "golden" / "portable-v1.1.recipe"


def bits(t: torch.Tensor) -> bytes:
    return t.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def differing(recipe: initrecipe.Recipe) -> list[str]:
    """Names whose CUDA replay differs from the CPU replay."""
    on_cpu = initrecipe.replay(recipe)
    on_gpu = initrecipe.replay(recipe, device="cuda")
    return [name for name in on_cpu if bits(on_cpu[name]) != bits(on_gpu[name])]


def timed(fn) -> float:
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="llama-1b", choices=["llama-1b", "llama-7b", "llama-tiny"])
    parser.add_argument("--json", metavar="OUT", help="also write the results as JSON")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_portable_gpu: no CUDA device here; nothing measured", file=sys.stderr)
        return 2
    result: dict[str, object] = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
    from initrecipe.rng.portable.torch_philox import status

    result["philox_words"] = status("cuda:0")._asdict()  # torch's kernel (checked) or eager integer ops
    result["golden_differs"] = differing(initrecipe.load(GOLDEN))
    small = initrecipe.record(base.model_fn("llama-tiny"), seed=0, rng="portable", sync_rng=False)
    result["llama_tiny_differs"] = differing(small)

    recipe = initrecipe.record(base.model_fn(args.model), seed=0, rng="portable", sync_rng=False)
    nbytes = recipe.total_bytes
    initrecipe.replay(recipe, device="cuda")  # warm-up: CUDA context, allocator, kernels
    torch.cuda.empty_cache()
    replay_seconds = timed(lambda: initrecipe.replay(recipe, device="cuda"))
    torch.cuda.empty_cache()
    buffer = torch.empty(nbytes // 4, dtype=torch.float32, device="cuda")
    buffer.fill_(0.0)
    fill_seconds = min(timed(lambda: buffer.fill_(1.0)) for _ in range(5))
    result.update(
        model=args.model,
        bytes=nbytes,
        replay_seconds=replay_seconds,
        replay_gb_per_s=nbytes / replay_seconds / 1e9,
        fill_gb_per_s=nbytes / fill_seconds / 1e9,
    )
    result["fraction_of_fill"] = result["replay_gb_per_s"] / result["fill_gb_per_s"]  # type: ignore[operator]
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0 if not result["golden_differs"] and not result["llama_tiny_differs"] else 1


if __name__ == "__main__":
    sys.exit(main())
