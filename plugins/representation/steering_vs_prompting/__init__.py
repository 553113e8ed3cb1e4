"""steering-vs-prompting: a prompting baseline for steering, and whether steering is harder
to ignore than a prompt.

:mod:`.idea` (the idea class), :mod:`.config`, :mod:`.prompts` (splits and the text each
condition shows), :mod:`.judges` (built-in judges; plugin judges come through the
``mi_ideas_register_judges`` hook), :mod:`.vectors`, :mod:`.run` (the pipeline; torch),
:mod:`.stats`, :mod:`.report` and :mod:`.figures`. Importing this package is cheap (no
torch).
"""

from .idea import SteeringVsPrompting

IDEAS: list = [SteeringVsPrompting]

__all__ = ["IDEAS", "SteeringVsPrompting"]
