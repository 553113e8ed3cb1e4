"""The sparsify-model idea (work in progress)."""

IDEAS: list = []
