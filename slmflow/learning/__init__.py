"""The learning loop: skill runs recorded as training data, LoRA adapters trained, served, gated.

`store` keeps runs, routes, shadow calls and promotions; `hooks` is what the cascade calls;
`export`, `train`, `adapters` and `evaluate` are the `slmflow distill` and `slmflow eval` commands.
"""

__all__: list[str] = []
