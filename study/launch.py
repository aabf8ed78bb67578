"""The names of study.dispatch under their old module, `study.launch`.

Kept for two readers: code that imports study.launch, and submitit jobs pickled before the split, whose
TrainCell pickle names `study.launch.TrainCell` (a requeued job unpickles it by that name). New code imports
study.dispatch.
"""

from study.dispatch import *  # noqa: F403
from study.dispatch import __all__  # noqa: F401
