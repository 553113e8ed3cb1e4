"""The plugin host: the plugin manager, its registries, and every spec lookup.

:class:`Host` (in :mod:`.manager`) loads plugins and indexes what they register: ideas,
model back-ends, datasets, dictionary formats and judges. :mod:`.resolve` turns a ``--model`` /
``--data`` / ``--sae`` spec (or a Python object) into a subject, dataset or dictionary by
asking those registries; domain modules never reach back up here. The host's own
back-ends, datasets and dictionary formats are registered by :mod:`.builtins` through the
same hooks a plugin uses.
"""

from mi_ideas.host.manager import (
    BUILTINS, ENTRY_POINT_GROUP, Host, PluginInfo, Registered, RegisteredJudge, get_host,
    set_host,
)
from mi_ideas.host.resolve import (
    DEFAULT_DATA, DEFAULT_MODEL, resolve_dataset, resolve_dictionary, resolve_model,
)

__all__ = [
    "BUILTINS", "DEFAULT_DATA", "DEFAULT_MODEL", "ENTRY_POINT_GROUP", "Host", "PluginInfo",
    "Registered", "RegisteredJudge", "get_host", "resolve_dataset", "resolve_dictionary", "resolve_model",
    "set_host",
]
