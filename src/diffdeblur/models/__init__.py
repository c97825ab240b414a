"""Network architectures. Importing this package registers every model in :mod:`diffdeblur.registry`."""
from . import mimo_unet, nafnet  # noqa: F401  (registration side effect)
