"""Random-number generators: torch's CPU generator modelled by arithmetic, and the portable Philox mode."""
