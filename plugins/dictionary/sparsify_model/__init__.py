"""The sparsify-model idea: Jacobian SAE pairs with sparse feature-to-feature connections."""

from .idea import SparsifyModel

IDEAS: list = [SparsifyModel]
