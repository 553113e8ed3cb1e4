"""steering-vs-prompting (skeleton; being built)."""

IDEAS: list = []
