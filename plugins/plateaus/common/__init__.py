"""Code shared by the plateau family's ideas.

- :mod:`.sweep`: the batched perturbation sweep engine (clean runs, paths, read-outs).
- :mod:`.directions`: target and direction families from a pool of real activations.
- :mod:`.curves`: metrics of read-out curves and ``DEFINITIONS``, the one place the
  family's shared metric definitions are written.

Importing this package imports nothing heavy; the modules import torch where they need it.
"""
