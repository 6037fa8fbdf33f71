"""Replay: run a planned program on real tensors, whole, sliced or streamed, on any device."""
