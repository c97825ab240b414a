"""Names and defaults of the inference options: the home of the constants the command line offers
before torch is imported (``diffdeblur deblur --help`` and argument errors answer in a fraction of a
second). The modules that implement the options import them from here.
"""
from __future__ import annotations

DEFAULT_MODEL = "default"  # weights/default.safetensors: the shipped default model
ENGINES = ("auto", "eager", "bf16", "channels-last", "bf16-channels-last", "compile", "onnx", "openvino")  # see diffdeblur.engines
SAMPLER_NAMES = ("ddpm", "ddim", "sde", "dual")  # every process's samplers: diffdeblur.methods.base.PROCESS_SAMPLERS
DEFAULT_OVERLAP = 32  # tile overlap in pixels
AUTO_WHOLE_PIXELS = 1 << 20  # tile "auto": images up to about a megapixel (1280x720 and smaller) run whole
AUTO_TILE = 512  # tile "auto": the tile side above AUTO_WHOLE_PIXELS (peak memory bounded at any size)
DEFAULT_TILE = "auto"  # deblur() / deblur_file() / the command line: whole image up to ~1 MP, else 512 tiles
SR_SCALES = (2, 4)  # super-resolution: the upscaling factors offered (diffdeblur sr --scale; NAFNetSR builds these)
REMOVE_WEIGHTS = "remove"  # object removal: the shipped weights' name (diffdeblur remove's default model)
MAX_UPSCALED_PIXELS = 100_000_000  # super-resolution: the largest output (100 MP); it is held whole in memory, tiled or not
DEFAULT_THUMB = 256  # trace: longest side of the per-step thumbnails kept for the grid and the GIF
DEMO_PORT = 7860  # demo: the port on 127.0.0.1
DEMO_MAX_MEGABYTES = 20.0  # demo: the largest upload accepted
DEMO_MAX_MEGAPIXELS = 12.0  # demo: a 4000x3000 photo; larger ones take minutes on a CPU
DEMO_MAX_STEPS = 100  # demo: the steps slider's upper end (a T=1000 chain is not offered 1000 steps of a CPU)
MASK_THRESHOLD = 0.5  # a removal mask's pixel marks a hole above half white (models, files, the demo's strokes)
