"""Datasets, paired-folder discovery and writing, and blur synthesis.

Library entry points: :func:`synthesize_folder` (synthetic blur pairs from a folder of sharp photos,
``diffdeblur synth SHARP_DIR``), :func:`synthesize_from_frames` (real blur pairs from high-speed
frames, ``diffdeblur synth --from-frames``), :func:`find_pairs` (read a paired folder).

The built-in training data sources are registered here, once, from the table :data:`BUILTIN_SOURCES`
(``data.train[].type`` in a config names one; :func:`register_source` adds more). Nothing in this
package imports the model registry or the networks: loading data does not load the models.
"""
from __future__ import annotations

from .folders import SynthFolder, paired_output, synthesize_folder
from .frames import FramesSource, synthesize_from_frames
from .image_sources import KernelBlurSource, PairedSource
from .masks import InpaintSource
from .pairs import find_pairs
from .sources import SourceBuilder, register_source
from .sr_pairs import SRSource
from .synth_source import build_synth, build_uniform_kernel

__all__ = ["synthesize_folder", "SynthFolder", "synthesize_from_frames", "paired_output", "find_pairs",
           "register_source", "BUILTIN_SOURCES"]

# name (the ``type`` of a data.train entry) -> builder(root, **options) of a source
BUILTIN_SOURCES: dict[str, SourceBuilder] = {
    "paired": PairedSource,              # random crops of a paired folder
    "blur-kernels": KernelBlurSource,    # sharp photos x uniform kernels, in sRGB
    "frames": FramesSource,              # real blur averaged from high-speed frames
    "synth": build_synth,                # dynamic-scene blur synthesis (diffdeblur.data.synth)
    "uniform-kernel": build_uniform_kernel,  # the naive baseline of synth: one straight kernel
    "inpaint": InpaintSource,            # sharp photos with a random hole (object removal, data.masks)
    "sr": SRSource,                      # sharp photos and their bicubic reduction (super-resolution, data.sr_pairs)
}
for _name, _builder in BUILTIN_SOURCES.items():
    register_source(_name)(_builder)
del _name, _builder
