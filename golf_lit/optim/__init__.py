"""Stage 3, optimizers of the record recipe: Muon, the parameter-group split and the lr/momentum schedules.

One job per module:
    config.py        ``OptimConfig``
    muon.py          Muon (fixed-coefficient and Polar-Express Newton-Schulz, MuonEq-R row normalization)
    param_groups.py  which parameter goes to Muon or which AdamW, with lr/wd/betas
    schedules.py     lr warmdown multipliers and the Muon momentum ramp

Imports torch only (and the model's parameter names); never lightning, eval or later stages.
"""

from golf_lit.optim.config import OptimConfig
from golf_lit.optim.muon import POLAR_EXPRESS_COEFFICIENTS, Muon, row_normalize, zeropower_newton_schulz
from golf_lit.optim.param_groups import ParamGroup, build_optimizers, build_param_groups
from golf_lit.optim.schedules import lr_multiplier, muon_momentum, warmdown_frac_multiplier

__all__ = [
    "Muon",
    "OptimConfig",
    "POLAR_EXPRESS_COEFFICIENTS",
    "ParamGroup",
    "build_optimizers",
    "build_param_groups",
    "lr_multiplier",
    "muon_momentum",
    "row_normalize",
    "warmdown_frac_multiplier",
    "zeropower_newton_schulz",
]
