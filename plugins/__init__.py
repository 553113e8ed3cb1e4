"""The built-in ideas, installed as ``mi_ideas_plugins``.

Each sub-package is one plugin, registered through the ``mi_ideas`` entry-point group
exactly as a third party's package would be (see pyproject.toml).
"""
