"""linear-representation (skeleton; being built)."""

IDEAS: list = []
