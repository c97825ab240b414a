"""Network architectures. Importing this package registers every model in :mod:`diffdeblur.registry`."""
from . import mimo_unet, nafnet  # noqa: F401  (registration side effect)
from . import autoencoder  # noqa: F401  (latent-diffusion autoencoders: taef2, ae-tiny)
from . import blurdm  # noqa: F401  (BlurDM prior + backbones; registers the blurdm-stage* objectives)
from . import sr3_unet  # noqa: F401  (SR3 / DvSR conditional diffusion; registers the diffusion objective)
from . import latent_denoiser  # noqa: F401  (latent diffusion: latent-tiny, latent-small, latent-taef2-small)
