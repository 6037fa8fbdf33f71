"""Recording: run a model constructor lazily and capture what it does to each tensor."""
