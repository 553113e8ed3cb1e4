"""Loopback NDIF test server (``server.py``) and its pytest fixtures (``fixtures.py``)."""
