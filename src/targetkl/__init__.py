"""targetkl: continuous audio VAEs trained to a chosen bitrate.

A Gaussian VAE's expected KL(q(z|x) || N(0, I)) is a coding cost. Target-KL regularization trains
the autoencoder so that this cost, measured in bits per second, lands on a chosen bitrate.
"""

__version__ = "0.1.0"


def load(path, device="cpu"):
    """Open a run folder or an export as an ``Autoencoder`` (``encode``, ``decode``, ``sample_rate``,
    ``frame_rate``, ``rate_kbps``, ``latent_stats``); see ``targetkl.api``."""
    from targetkl.api import load as _load

    return _load(path, device)
