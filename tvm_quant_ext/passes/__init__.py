"""The quantization passes on Relax: prepare -> annotate -> calibrate -> realize."""
from .prepare import CanonicalizeBias, NameLayers, prepare, PrepareForQuantization
from .annotate import Annotate, annotate, register_annotate, ANNOTATE_RULES
from .calibrate import Calibrate, attach_scales, calibrate, calibration_key, run_calibration
from .realize import Realize, realize, REALIZE_RULES, register_realize
from .realize_integer import INTEGER_RULES, register_integer

__all__ = [
    "ANNOTATE_RULES", "Annotate", "INTEGER_RULES", "register_integer", "Calibrate", "attach_scales", "calibration_key", "CanonicalizeBias", "NameLayers",
    "PrepareForQuantization", "REALIZE_RULES", "Realize", "annotate", "calibrate",
    "prepare", "realize", "register_annotate", "register_realize", "run_calibration",
]
