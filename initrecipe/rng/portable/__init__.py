"""The portable mode: Philox4x32-10, the samplers built on it, and a bitwise-fixed QR."""
