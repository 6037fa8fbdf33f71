"""Safetensors: stream a recipe into checkpoint files, and read checkpoints back."""
