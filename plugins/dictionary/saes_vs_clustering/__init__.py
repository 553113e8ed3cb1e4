"""The saes-vs-clustering idea (work in progress)."""

IDEAS: list = []
