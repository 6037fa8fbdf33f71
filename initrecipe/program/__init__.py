"""The init program: its instructions and values (the IR), and the operators it may name."""
