import os
import sys

from hypothesis import settings

sys.path.insert(0, os.path.dirname(__file__))

# Kernels compile (or load from numba's cache) on first use: no per-example deadline.
settings.register_profile("evo", deadline=None, print_blob=True)
settings.load_profile("evo")
