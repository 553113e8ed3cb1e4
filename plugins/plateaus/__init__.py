"""The plateau family: activation-plateaus, discrete-output-states, sensitive-directions.

One plugin, three ideas (one sub-package each), sharing :mod:`.common`: the batched sweep
engine (:mod:`.common.sweep`), the direction families (:mod:`.common.directions`) and the
curve metrics with their definitions (:mod:`.common.curves`). Importing this package is
cheap: the ideas import torch inside ``run``.
"""

from mi_ideas.hookspecs import hookimpl


@hookimpl
def mi_ideas_register_ideas(register):
    from .activation_plateaus import ActivationPlateaus
    from .discrete_output_states import DiscreteOutputStates
    from .sensitive_directions import SensitiveDirections

    register(ActivationPlateaus)
    register(DiscreteOutputStates)
    register(SensitiveDirections)
