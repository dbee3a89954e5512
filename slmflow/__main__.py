"""`python -m slmflow` is the `slmflow` command."""

from slmflow.cli import main

__all__: list[str] = []

main()
