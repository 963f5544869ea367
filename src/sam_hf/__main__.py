"""`python -m sam_hf ...` (and `accelerate launch -m sam_hf ...`): the `sam-hf` command line."""

from .cli import main

main()
