"""Reading recipes: show, diff and check."""
