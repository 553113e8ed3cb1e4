"""The transcoder-clustering idea (work in progress)."""

IDEAS: list = []
