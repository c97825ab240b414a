"""diffdeblur: efficient dynamic-scene image deblurring with diffusion models.

Public API: :func:`load_model`, :func:`deblur`, :func:`deblur_file`, :func:`build_model`, :func:`save_model`.
Images at the API boundary are float32 RGB in [0, 1]: arrays (H, W, 3), tensors (B, 3, H, W).
"""
from . import objectives  # noqa: F401  (the registered training objectives, in one module)
from .checkpoint import save_model
from .errors import DiffdeblurError
from .inference import deblur, deblur_file, load_model, restore_tensor
from .registry import build_model, list_models, model_names  # registers every model, once
from .version import __version__

__all__ = ["load_model", "deblur", "deblur_file", "restore_tensor", "build_model", "save_model", "list_models",
           "model_names", "DiffdeblurError", "__version__"]
