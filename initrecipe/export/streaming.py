"""Writing replayed tensors into safetensors files as they come, one write in flight on a
background thread, with an optional progress bar."""

from __future__ import annotations

import sys
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterable

import torch
from tqdm import tqdm

from initrecipe.export.safetensors_writer import StreamingSafetensorsWriter, TensorSpec
from initrecipe.format.recipe import TensorEntry
from initrecipe.support import hugepages

__all__ = ["stream_tensors", "progress_bar"]


def progress_bar(enabled: bool | None, total_bytes: int, total_tensors: int) -> tqdm | None:
    """A progress bar on stderr over ``total_bytes`` (``enabled`` None: when stderr is a terminal)."""
    if enabled is None:
        enabled = bool(getattr(sys.stderr, "isatty", lambda: False)())
    if not enabled:
        return None
    bar = tqdm(
        total=total_bytes,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc="converting",
        file=sys.stderr,
        dynamic_ncols=True,
        leave=True,
    )
    bar.set_postfix_str(f"tensors 0/{total_tensors}", refresh=False)
    return bar


def _write_one(writer: StreamingSafetensorsWriter, name: str, tensor: torch.Tensor,
               on_bytes: Callable[[int], None] | None) -> None:
    writer.write(name, tensor, on_bytes)
    if writer.done:
        writer.close()


def _converted(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``tensor.to(dtype)`` (the same rounding: both are torch's copy kernel), into fresh memory
    advised to use huge pages (:mod:`initrecipe.support.hugepages`) when ``tensor`` is a dense CPU one."""
    if tensor.device.type != "cpu" or not tensor.is_contiguous():
        return tensor.to(dtype)
    return hugepages.empty_strided(tensor.shape, tensor.stride(), dtype).copy_(tensor)

def stream_tensors(stream: Iterable[tuple[list[TensorEntry], torch.Tensor]],
            place: Callable[[list[TensorEntry]], tuple[StreamingSafetensorsWriter, TensorSpec]],
            writers: Iterable[StreamingSafetensorsWriter],
            on_bytes: Callable[[int], None] | None = None,
            on_tensor: Callable[[int], None] | None = None) -> int:
    """Write each replayed tensor where ``place`` says (cast to its planned dtype); the count written.

    One tensor is written on a background thread while the replay builds the next one: at most
    two tensors are held at a time, and disk writes overlap generation.  On any exception (a
    signal included) every writer is aborted, which stops the write in flight within one chunk.
    """
    done = 0
    io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="initrecipe-write")
    try:
        writing: Future[None] | None = None
        for entries, tensor in stream:
            writer, spec = place(entries)
            if tensor.dtype != spec.dtype:
                tensor = _converted(tensor, spec.dtype)
            if writing is not None:
                writing.result()
            writing = io.submit(_write_one, writer, spec.name, tensor, on_bytes)
            del tensor
            done += 1
            if on_tensor is not None:
                on_tensor(done)
        if writing is not None:
            writing.result()
    except BaseException:
        # Stop the write in flight (within one chunk) before waiting for the thread.
        for writer in writers:
            writer.abort()
        raise
    finally:
        io.shutdown(wait=True)
    return done

