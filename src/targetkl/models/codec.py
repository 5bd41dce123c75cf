"""The codec: an encoder and decoder from the architecture registry (``model.architecture``,
:mod:`targetkl.models.architectures`) around a pluggable bottleneck ("DAC-VAE" with the default ``dac``).

Waveforms are ``(batch, audio_channels, samples)`` in [-1, 1]; latents are ``(batch, latent_dim, frames)`` with
``frames = samples / hop`` and ``hop = prod(strides)``.
"""

from __future__ import annotations

import hashlib

import torch
import torch.nn.functional as F
from torch import nn

from targetkl.bottlenecks import Bottleneck, BottleneckOutput, build_bottleneck
from targetkl.config import Config, ConfigError, ModelConfig, validate
from targetkl.models.architectures import architecture
from targetkl.nn import ResidualUnit
from targetkl.nn.layers import WeightNormConv1d, WeightNormConvTranspose1d

class Codec(nn.Module):
    """Encoder -> bottleneck -> decoder, built from a model-only config and a bottleneck. The bottleneck
    decides what the latent costs in bits; :func:`build_codec` makes both from a whole ``Config``."""

    def __init__(self, model: ModelConfig, bottleneck: Bottleneck):
        super().__init__()
        self.sample_rate = model.sample_rate
        self.audio_channels = model.audio_channels
        self.hop = model.hop
        self.frame_rate = model.frame_rate
        self.latent_dim = model.latent_dim
        self.bottleneck = bottleneck
        chosen = architecture(model.architecture)
        self.encoder, self.decoder = chosen.build(model, bottleneck.input_channels)
        # (encoder, decoder) frames, when the architecture declares them; else counted from the convolutions
        self.declared_receptive_field = chosen.receptive_field(model) if chosen.receptive_field else None
        if model.init == "scaled":
            initialize_weights(self)

    def pad(self, audio: torch.Tensor) -> torch.Tensor:
        """Right-pad ``(B, C, T)`` with zeros to a multiple of ``hop``."""
        remainder = audio.shape[-1] % self.hop
        if remainder:
            audio = F.pad(audio, (0, self.hop - remainder))
        return audio

    def encode(self, audio: torch.Tensor) -> BottleneckOutput:
        """``(B, audio_channels, T)`` with ``T % hop == 0`` to the bottleneck's output (latent ``(B, D, T/hop)``)."""
        return self.bottleneck(self.encoder(audio))

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """``(B, D, F)`` to ``(B, audio_channels, F * hop)``."""
        return self.decoder(latent)

    def compile_networks(self) -> None:
        """Train through ``torch.compile``d encoder and decoder (``train.compile``). They share the weights and stay
        out of the state dict; evaluation and inference, whose clip lengths vary, keep the eager networks, and
        the bottleneck stays eager (its rate control updates host scalars in place, which a compiled graph
        would have saved for the backward pass)."""
        self.__dict__["_compiled_networks"] = (torch.compile(self.encoder), torch.compile(self.decoder))

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, BottleneckOutput]:
        """Training forward: ``(decoded (B, audio_channels, T), bottleneck output)``."""
        compiled = self.__dict__.get("_compiled_networks")
        if compiled is None or not self.training:
            encoded = self.encode(audio)
            return self.decode(encoded.z), encoded
        encoded = self.bottleneck(compiled[0](audio))
        return compiled[1](encoded.z), encoded


MAX_PARAMETERS = 2_000_000_000  # 8 GB of float32 weights: a config asking for more is a typo, not a codec


def build_codec(config: Config) -> Codec:
    """The codec a config describes: its bottleneck from the registry (``model.bottleneck``, with the rate
    settings it reads), then the encoder and decoder of ``config.model``. The config is validated and the codec
    first laid out on the ``meta`` device (no memory): more than ``MAX_PARAMETERS`` weights is a ``ConfigError``
    naming the model's sizes, before anything is allocated."""
    validate(config)
    with torch.device("meta"):
        parameters = sum(p.numel() for p in Codec(config.model, build_bottleneck(config)).parameters())
    if parameters > MAX_PARAMETERS:
        model = config.model
        raise ConfigError(f"model.latent_dim={model.latent_dim}, encoder_dim={model.encoder_dim}, decoder_dim="
                          f"{model.decoder_dim}, strides={model.strides}: a codec of {parameters:.3g} weights (more "
                          f"than {MAX_PARAMETERS:.0e}); check these sizes")
    return Codec(config.model, build_bottleneck(config))


def initialize_weights(codec: nn.Module) -> None:
    """Start every conv so that a signal keeps its scale along the main path and each residual unit is the identity.

    Each conv's weight rows get unit norm per output (variance preserving for unit-variance inputs), biases
    are zero (as in DAC) and the last 1x1 conv of every residual branch has ``g = 0``, so ``x + branch(x) = x``
    at step 0 and the branches grow in from there (Fixup/ReZero style). Used with ``model.init=scaled``;
    PyTorch's default init is the default (why: ``docs/experiments.md``).
    """
    with torch.no_grad():
        for module in codec.modules():
            if isinstance(module, (WeightNormConv1d, WeightNormConvTranspose1d)):
                if module.bias is not None:
                    module.bias.zero_()
                direction = module.weight_v
                if isinstance(module, WeightNormConvTranspose1d):
                    fan_in = direction.shape[0] * direction.shape[2] / module.stride[0]
                else:
                    fan_in = direction[0].numel()
                direction.normal_(0.0, fan_in ** -0.5)
                module.weight_g.copy_(direction.flatten(1).norm(dim=1).reshape(-1, 1, 1))
        for module in codec.modules():  # after the convs: a unit comes before its own convs in modules()
            if isinstance(module, ResidualUnit):
                module.block[-1].weight_g.zero_()


def model_fingerprint(model: nn.Module) -> str:
    """A short hash of every parameter, so files made by one model are refused by another.

    Buffers (controller state) are left out: they steer training and play no part in decoding.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(model.named_parameters()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]
