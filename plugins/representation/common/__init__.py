"""Shared pieces of the representation family."""
