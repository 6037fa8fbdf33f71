"""What reporting uninitialized tensors adds to ``initrecipe.record``: the time of
``recipe.uninitialized`` (shape propagation on meta, live programs, the decision) against the whole
``record`` call, which includes it, in the same run, for GPT-2 (124M) and a Llama-1B-sized config.

Run: ``PYTHONPATH=. python tools/bench_findings.py``; prints one line per model.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

from timing import best_seconds, cpu_model, load_average  # noqa: E402

import initrecipe.capture.recorder as recorder  # noqa: E402


def models():
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    gpt2 = GPT2Config()
    llama = LlamaConfig(hidden_size=2048, intermediate_size=5504, num_hidden_layers=16, num_attention_heads=16,
                        num_key_value_heads=16, vocab_size=32000)
    return [("gpt2-124M", lambda: GPT2LMHeadModel(gpt2)), ("llama-1B", lambda: LlamaForCausalLM(llama))]


def main() -> None:
    print(f"# {cpu_model()}, load {load_average()}")
    for name, fn in models():
        record_s = best_seconds(lambda: recorder.record(fn, seed=0), repeats=5)
        recipe = recorder.record(fn, seed=0)

        def find() -> None:
            recipe._uninitialized = None
            recipe.uninitialized

        find_s = best_seconds(find, repeats=5)
        print(f"{name}: record {record_s * 1e3:.1f} ms, of which the uninitialized pass {find_s * 1e3:.1f} ms "
              f"({find_s / record_s:.2f}x of record), {len(recipe.program)} instructions, "
              f"{len(recipe.uninitialized)} uninitialized")


if __name__ == "__main__":
    main()
