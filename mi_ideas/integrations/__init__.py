"""Bridges from mi-ideas to other libraries' own workflows.

| module | what |
|---|---|
| :mod:`mi_ideas.integrations.sae_lens` | train SAELens dictionaries with SAELens's ``SAETrainer`` on activations from any subject (local or NDIF): ``activation_provider`` (a ``DataProvider``) and ``evaluator`` (an ``Evaluator`` with mi-ideas metrics) |

Importing this package is cheap: each module imports its library when used.
"""
