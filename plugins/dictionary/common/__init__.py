"""Shared pieces of the dictionary family (training, reconstruction metrics)."""
