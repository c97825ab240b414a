"""diffdeblur: efficient dynamic-scene image deblurring with diffusion models.

Public API: :func:`load_model`, :func:`deblur`, :func:`deblur_file`, :func:`upscale`, :func:`remove`,
:func:`build_model`, :func:`save_model`.
Images at the API boundary are float32 RGB in [0, 1]: arrays (H, W, 3), tensors (B, 3, H, W).

The names are imported on first use (PEP 562 ``__getattr__``), so that ``import diffdeblur`` and
``diffdeblur --help`` do not pay for importing torch. The model registry fills itself once, when
:mod:`diffdeblur.registry` is first imported; the training objectives live in :mod:`diffdeblur.objectives`.
"""
import typing

from .errors import DiffdeblurError
from .version import __version__

if typing.TYPE_CHECKING:  # for type checkers and IDEs; at run time the names below load lazily
    from .checkpoint import save_model
    from .inference import deblur, deblur_file, load_model, restore_tensor
    from .registry import build_model, list_models, model_names
    from .tasks import remove, upscale
del typing  # the package's namespace holds its API only (no Any, TYPE_CHECKING, annotations)

__all__ = ["load_model", "deblur", "deblur_file", "upscale", "remove", "restore_tensor", "build_model", "save_model",
           "list_models", "model_names", "DiffdeblurError", "__version__"]


def __getattr__(name: str) -> object:
    if name in ("load_model", "deblur", "deblur_file", "restore_tensor"):
        from . import inference as module
    elif name in ("build_model", "list_models", "model_names"):
        from . import registry as module
    elif name in ("upscale", "remove"):
        from . import tasks as module
    elif name == "save_model":
        from . import checkpoint as module
    else:
        raise AttributeError(f"module 'diffdeblur' has no attribute '{name}'")
    value = getattr(module, name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
