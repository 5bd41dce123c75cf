"""stable-audio-tools autoencoders (Stable Audio's "Oobleck" VAE): read them, and write runs back in their format.

A stable-audio-tools model is ``model_config.json`` plus weights (``.safetensors``, or a ``.ckpt`` holding
``state_dict``). The autoencoder is the config's ``model`` when ``model_type`` is ``autoencoder``; in a whole
model (Stable Audio Open's ``diffusion_cond``) it is the ``model.pretransform`` block of type ``autoencoder``,
whose weights sit under ``pretransform.model.``. A training checkpoint keeps them under ``autoencoder.``.

Our ``oobleck`` architecture is the same network with diffusers' module names; this module maps between
stable-audio-tools' nested ``layers.N`` names and ours (:func:`name_pairs`) and reshapes Snake's ``alpha`` and
``beta`` (``(C,)`` there, ``(1, C, 1)`` here). What is supported: ``oobleck`` encoder and decoder with Snake
(``use_snake: true``), no anti-aliased activations, transposed-conv upsampling, and a ``vae`` bottleneck (or none:
a deterministic latent). ``final_tanh`` (stable-audio-tools' default) is ``model.oobleck.final_tanh``.

The export (:func:`export_files`) writes ``model_config.json`` (model type ``autoencoder``), ``model.safetensors``
with bare ``encoder.*``/``decoder.*`` keys (what ``load_ckpt_state_dict`` and ``copy_state_dict`` take) and
``pretransform.json``, the block a diffusion model's config holds: ``{"type": "autoencoder", "iterate_batch":
true, "config": ..., "scale": ...}`` with ``scale`` the RMS of the posterior means over training clips
(stable-audio-tools divides latents by it).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from targetkl.foreign.base import (ForeignCheckpointError, ForeignCodec, ForeignFormat, load_safetensors,
                                   load_weights_only, named_tensors, register_format)

CONFIG_FILE = "model_config.json"
WEIGHT_SUFFIXES = (".safetensors", ".ckpt", ".pth", ".pt")
PREFIXES = ("", "autoencoder.", "pretransform.model.")
RESIDUAL = ("snake1", "conv1", "snake2", "conv2")  # our names of a residual unit's layers.0 .. layers.3


def name_pairs(blocks: int) -> list[tuple[str, str]]:
    """``(stable-audio-tools prefix, our prefix)`` of every layer with weights, for ``blocks`` strides."""
    pairs = [("encoder.layers.0.", "encoder.conv1."), ("decoder.layers.0.", "decoder.conv1.")]
    for i in range(blocks):
        theirs, ours = f"encoder.layers.{i + 1}.layers.", f"encoder.block.{i}."
        for unit in range(3):
            pairs += [(f"{theirs}{unit}.layers.{j}.", f"{ours}res_unit{unit + 1}.{name}.")
                      for j, name in enumerate(RESIDUAL)]
        pairs += [(f"{theirs}3.", f"{ours}snake1."), (f"{theirs}4.", f"{ours}conv1.")]
        theirs, ours = f"decoder.layers.{i + 1}.layers.", f"decoder.block.{i}."
        pairs += [(f"{theirs}0.", f"{ours}snake1."), (f"{theirs}1.", f"{ours}conv_t1.")]
        for unit in range(3):
            pairs += [(f"{theirs}{unit + 2}.layers.{j}.", f"{ours}res_unit{unit + 1}.{name}.")
                      for j, name in enumerate(RESIDUAL)]
    for part in ("encoder", "decoder"):
        pairs += [(f"{part}.layers.{blocks + 1}.", f"{part}.snake1."),
                  (f"{part}.layers.{blocks + 2}.", f"{part}.conv2.")]
    return pairs


def _snake(name: str) -> bool:
    return name.endswith((".alpha", ".beta"))


def to_ours(state: dict[str, torch.Tensor], blocks: int) -> tuple[dict[str, torch.Tensor], list[str]]:
    """stable-audio-tools' autoencoder weights (bare keys) under our names; also the keys that did not map."""
    pairs = name_pairs(blocks)
    out, left = {}, []
    for key, tensor in state.items():
        for theirs, ours in pairs:
            if key.startswith(theirs) and "." not in key[len(theirs):]:
                name = ours + key[len(theirs):]
                out[name] = tensor.reshape(1, -1, 1) if _snake(name) else tensor
                break
        else:
            left.append(key)
    return out, left


def to_theirs(state: dict[str, torch.Tensor], blocks: int) -> dict[str, torch.Tensor]:
    """Our ``oobleck`` encoder and decoder weights under stable-audio-tools' names."""
    pairs = name_pairs(blocks)
    out = {}
    for key, tensor in state.items():
        for theirs, ours in pairs:
            if key.startswith(ours) and "." not in key[len(ours):]:
                out[theirs + key[len(ours):]] = tensor.reshape(-1) if _snake(key) else tensor
                break
    return out


# ------------------------------------------------------------------------------------------------- reading
def _files(path: Path) -> tuple[Path, Path]:
    """``(model_config.json, weights file)`` of a folder or of a weights file with the config beside it."""
    if path.is_dir():
        config = path / CONFIG_FILE
        weights = sorted(p for p in path.iterdir() if p.suffix in WEIGHT_SUFFIXES and p.is_file())
        if not weights:
            raise ForeignCheckpointError(f"{path}: holds {CONFIG_FILE} but no weights file "
                                         f"({', '.join(WEIGHT_SUFFIXES)}); put the model's weights beside it")
        if len(weights) > 1:
            raise ForeignCheckpointError(f"{path}: holds several weights files ({', '.join(p.name for p in weights)}); "
                                         "pass the one to import")
        return config, weights[0]
    return path.parent / CONFIG_FILE, path


def detect(path: Path) -> bool:
    if path.is_dir():
        return (path / CONFIG_FILE).is_file()
    if path.name == CONFIG_FILE:
        return False
    return path.is_file() and (path.parent / CONFIG_FILE).is_file()


def autoencoder_config(config: dict, where: Path) -> tuple[dict, str, int]:
    """``(autoencoder config, weights prefix, sample rate)`` of a model config."""
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise ForeignCheckpointError(f"{where}: not a stable-audio-tools model config (no \"model\" object)")
    sample_rate = config.get("sample_rate")
    if not isinstance(sample_rate, int) or sample_rate <= 0:
        raise ForeignCheckpointError(f"{where}: \"sample_rate\" must be a positive whole number")
    kind = config.get("model_type")
    if kind == "autoencoder":
        return config["model"], "", sample_rate
    pretransform = config["model"].get("pretransform")
    if isinstance(pretransform, dict) and pretransform.get("type") == "autoencoder" \
            and isinstance(pretransform.get("config"), dict):
        return pretransform["config"], "pretransform.model.", sample_rate
    raise ForeignCheckpointError(f"{where}: a {kind!r} model with no autoencoder pretransform; import an "
                                 "autoencoder config or a model whose pretransform is one")


def _part(ae: dict, name: str, where: Path) -> dict:
    part = ae.get(name)
    if not isinstance(part, dict) or part.get("type") != "oobleck" or not isinstance(part.get("config", {}), dict):
        kind = part.get("type") if isinstance(part, dict) else None
        raise ForeignCheckpointError(f"{where}: the {name} is {kind!r}; only \"oobleck\" encoders and decoders "
                                     "are imported")
    return part.get("config", {})


def config_settings(ae: dict, sample_rate: int, where: Path) -> tuple[dict[str, Any], str]:
    """``(--set keys, bottleneck)`` that build the autoencoder ``ae`` as our ``oobleck`` codec (stable-audio-tools'
    own defaults fill what the config leaves out)."""
    encoder, decoder = _part(ae, "encoder", where), _part(ae, "decoder", where)
    strides = list(encoder.get("strides", [2, 4, 8, 8]))
    multiples = list(encoder.get("c_mults", [1, 2, 4, 8]))
    if list(decoder.get("strides", [2, 4, 8, 8])) != strides or list(decoder.get("c_mults", [1, 2, 4, 8])) != multiples:
        raise ForeignCheckpointError(f"{where}: the decoder's strides or c_mults differ from the encoder's; only "
                                     "mirrored layouts are imported")
    for name, part in (("encoder", encoder), ("decoder", decoder)):
        if not part.get("use_snake", False):
            raise ForeignCheckpointError(f"{where}: the {name} uses ELU (use_snake false); only Snake Oobleck "
                                         "models (Stable Audio's) are imported")
        if part.get("antialias_activation", False) or part.get("use_nearest_upsample", False):
            raise ForeignCheckpointError(f"{where}: the {name} uses antialias_activation or use_nearest_upsample, "
                                         "which targetkl's oobleck does not build")
    bottleneck = (ae.get("bottleneck") or {}).get("type") if isinstance(ae.get("bottleneck"), dict) else None
    latent = int(decoder.get("latent_dim", 32))
    if ae.get("latent_dim") is not None and int(ae["latent_dim"]) != latent:
        raise ForeignCheckpointError(f"{where}: latent_dim {ae['latent_dim']} is not the decoder's {latent}")
    encoder_out = int(encoder.get("latent_dim", 32))
    expected = 2 * latent if bottleneck == "vae" else latent
    if bottleneck not in ("vae", None) or encoder_out != expected:
        raise ForeignCheckpointError(f"{where}: bottleneck {bottleneck!r} with encoder output {encoder_out} and "
                                     f"latent {latent}; a \"vae\" bottleneck (encoder output 2 x latent) or none "
                                     "is imported")
    channels = int(encoder.get("in_channels", 2))
    if int(decoder.get("out_channels", 2)) != channels:
        raise ForeignCheckpointError(f"{where}: the decoder's out_channels differ from the encoder's in_channels")
    settings = {"model.architecture": "oobleck", "model.sample_rate": sample_rate, "model.audio_channels": channels,
                "model.encoder_dim": int(encoder.get("channels", 128)), "model.strides": tuple(strides),
                "model.decoder_dim": int(decoder.get("channels", 128)), "model.latent_dim": latent,
                "model.oobleck.channel_multiples": tuple(multiples),
                "model.oobleck.final_tanh": bool(decoder.get("final_tanh", True)), "model.vae.sigma_eps": 1e-4}
    return settings, "vae" if bottleneck == "vae" else "ae"


def read(path: Path) -> ForeignCodec:
    config_path, weights_path = _files(path)
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as error:
        raise ForeignCheckpointError(f"{config_path}: not readable JSON ({str(error).splitlines()[0][:100]})") from None
    ae, prefix, sample_rate = autoencoder_config(config, config_path)
    settings, bottleneck = config_settings(ae, sample_rate, config_path)
    if weights_path.suffix == ".safetensors":
        state = load_safetensors(weights_path)
    else:
        loaded = load_weights_only(weights_path, "save the weights as .safetensors, or as a .ckpt holding state_dict")
        state = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else loaded
    state = named_tensors(state, weights_path)
    for candidate in (prefix, *PREFIXES):
        bare = {key[len(candidate):]: v for key, v in state.items() if key.startswith(candidate)
                and key[len(candidate):].startswith(("encoder.layers.", "decoder.layers."))}
        if bare:
            break
    else:
        raise ForeignCheckpointError(f"{weights_path}: no encoder.layers.* / decoder.layers.* weights (looked under "
                                     f"{', '.join(repr(p) for p in (prefix, *PREFIXES) if p)} too)")
    weights, left = to_ours(bare, len(settings["model.strides"]))
    if left:
        raise ForeignCheckpointError(f"{weights_path}: weights {', '.join(left[:3])} do not belong to the Oobleck "
                                     f"layout {config_path} describes")
    notes = [f"the {'posterior mean' if bottleneck == 'vae' else 'latent'} of Stable Audio's VAE is the latent: "
             f"{settings['model.latent_dim']} channels at {sample_rate / math.prod(settings['model.strides']):g} Hz",
             "stable-audio-tools' discriminator is not one of ours: the discriminator starts fresh"]
    return ForeignCodec("stable-audio-tools", settings, weights,
                        encoder_output="posterior" if bottleneck == "vae" else "latent", bottleneck=bottleneck,
                        notes=notes)


register_format(ForeignFormat("stable-audio-tools", "a folder with model_config.json and its weights, or a weights "
                              "file with model_config.json beside it", detect, read))


# ------------------------------------------------------------------------------------------------- writing
def model_config(config) -> dict:
    """stable-audio-tools' ``model_config.json`` of our oobleck run ``config`` (a ``vae`` bottleneck)."""
    model = config.model
    shared = {"c_mults": list(model.oobleck.channel_multiples), "strides": list(model.strides),
              "use_snake": True}
    encoder = {**shared, "in_channels": model.audio_channels, "channels": model.encoder_dim,
               "latent_dim": 2 * model.latent_dim}
    decoder = {**shared, "out_channels": model.audio_channels, "channels": model.decoder_dim,
               "latent_dim": model.latent_dim, "final_tanh": bool(model.oobleck.final_tanh)}
    return {"model_type": "autoencoder", "sample_rate": model.sample_rate, "audio_channels": model.audio_channels,
            "model": {"encoder": {"type": "oobleck", "config": encoder},
                      "decoder": {"type": "oobleck", "config": decoder},
                      "bottleneck": {"type": "vae"}, "latent_dim": model.latent_dim, "downsampling_ratio": model.hop,
                      "io_channels": model.audio_channels}}


def export_files(config, tensors: dict[str, torch.Tensor], latent_stats: dict) -> dict[str, Any]:
    """The files of a stable-audio-tools export: name -> text or tensors. ``tensors``: the run's encoder and decoder
    under our names with the rate trim folded in (:func:`targetkl.export.oobleck_vae_tensors`)."""
    theirs = {key: value.contiguous() for key, value in to_theirs(tensors, len(config.model.strides)).items()}
    mean, std = torch.tensor(latent_stats["mean"]), torch.tensor(latent_stats["std"])
    scale = float(torch.sqrt((std.pow(2) + mean.pow(2)).mean()))
    full = model_config(config)
    pretransform = {"type": "autoencoder", "iterate_batch": True, "config": full["model"], "scale": scale}
    return {"model_config.json": json.dumps(full, indent=2) + "\n", "model.safetensors": theirs,
            "pretransform.json": json.dumps(pretransform, indent=2) + "\n"}
