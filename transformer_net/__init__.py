"""transformer-net: fast neural style transfer (Johnson et al. 2016).

Importing the package is cheap: submodules are imported where needed, so that
``stylize.py`` starts without Lightning or Hydra.
"""

__version__ = "0.1.0"
