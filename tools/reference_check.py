"""Compare targetkl with the reference packages themselves, weight for weight, and write CI's fixtures.

Runs in a separate virtual environment that holds the real packages (never in CI; the recipe, with
stable-audio-tools' dependencies, is in docs/reference.md):

    python -m venv ../refvenv
    ../refvenv/bin/pip install torch==2.11.0 torchaudio==2.11.0 descript-audio-codec==1.0.0 safetensors
    PYTHONPATH=src ../refvenv/bin/python tools/reference_check.py [--checks dac,sat,diffusers] [--write-fixtures]

For each DAC layout (tiny ones with even and odd strides, and the released 16, 24 and 44.1 kHz layouts at full
size) it builds descript-audio-codec's ``DAC``, moves every weight off its initial value (seeded noise), saves it
as DAC's weights file (``save(path, package=False)``), reads that file with :mod:`targetkl.foreign.dac` into our
``dac`` architecture (bottleneck ``ae``: the latent is DAC's continuous one) and compares, on the same
one-second input, the encoder outputs and the decoder outputs (``max_abs`` must be <= 1e-4). It also checks that
DAC's default save format (a torch.package) is refused. Prints JSON; ``--write-fixtures`` writes the tiny
layouts' weights files and inputs/outputs to ``tests/fixtures/reference/`` (a few hundred KB) for
``tests/test_reference.py``.

``sat`` does the same for stable-audio-tools' Oobleck autoencoder (a tiny mono layout saved as bare
``.safetensors``, a tiny stereo one with stable-audio-tools' default final tanh inside a whole model's
``pretransform`` saved as a ``.ckpt``, and Stable Audio Open's VAE layout at full size), through ``targetkl
import``; and the reverse: a run exported with ``--format stable-audio-tools`` is built by stable-audio-tools'
own ``create_autoencoder_from_config``, loaded by its ``load_ckpt_state_dict``/``copy_state_dict`` (every
tensor must land), its ``pretransform.json`` built by ``create_pretransform_from_config``, and compared.
``diffusers`` imports ``AutoencoderOobleck.save_pretrained`` folders (tiny and full size). ``losses`` puts
``dac.nn.loss``'s mel and STFT losses and DAC's ``Discriminator`` beside ours on the same audio (the per-window
mel values must agree when given DAC's mel bin counts; the rest is reported for docs/reference.md).
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import torch

TOLERANCE = 1e-4
FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "reference"
LAYOUTS = {  # DAC constructor arguments; the released models' layouts at full size
    "tiny": dict(encoder_dim=4, encoder_rates=[2, 4], decoder_dim=16, decoder_rates=[4, 2], n_codebooks=2,
                 codebook_size=16, codebook_dim=4, sample_rate=16000),
    "tiny-odd": dict(encoder_dim=4, encoder_rates=[2, 5], decoder_dim=16, decoder_rates=[5, 2], n_codebooks=2,
                     codebook_size=16, codebook_dim=4, sample_rate=16000),
    "16khz": dict(encoder_rates=[2, 4, 5, 8], decoder_rates=[8, 5, 4, 2], n_codebooks=12, sample_rate=16000),
    "24khz": dict(encoder_rates=[2, 4, 5, 8], decoder_rates=[8, 5, 4, 2], n_codebooks=32, sample_rate=24000),
    "44khz": dict(n_codebooks=9, sample_rate=44100),
}


def perturbed_dac(kwargs: dict, seed: int):
    import dac

    torch.manual_seed(seed)  # before DAC's own initialization, which the seed then fixes too
    return perturb(dac.DAC(**kwargs))


def our_codec(path: Path):
    from targetkl.config import resolve
    from targetkl.foreign.dac import codec_weights, config_settings, read_checkpoint
    from targetkl.models.codec import build_codec

    kwargs, state = read_checkpoint(path)
    flags = {**config_settings(kwargs, str(path)), "model.bottleneck": "ae"}
    codec = build_codec(resolve("tiny", flags=flags)).eval()
    weights = {k: v for k, v in codec_weights(state).items() if k.startswith(("encoder.", "decoder."))}
    missing, unexpected = codec.load_state_dict(weights, strict=False)
    left = [k for k in missing if k.startswith(("encoder.", "decoder."))]
    if left or unexpected:
        raise SystemExit(f"{path}: weights that did not map: missing {left[:3]}, unexpected {unexpected[:3]}")
    return codec


@torch.no_grad()
def compare(name: str, kwargs: dict, folder: Path, seed: int = 0) -> tuple[dict, dict]:
    model = perturbed_dac(kwargs, seed)
    path = folder / f"dac-{name}.pth"
    model.save(str(path), package=False)
    started = time.perf_counter()
    codec = our_codec(path)
    hop = math.prod(kwargs.get("encoder_rates", [2, 4, 8, 8]))
    samples = (int(kwargs["sample_rate"]) // hop) * hop
    audio = 0.5 * torch.sin(torch.linspace(0, 2000, samples))[None, None] * torch.rand(1, 1, samples)
    theirs_z, ours_z = model.encoder(audio), codec.encoder(audio)
    theirs_audio, ours_audio = model.decoder(theirs_z), codec.decoder(theirs_z)
    length = theirs_audio.shape[-1]
    row = {"layout": name, "sample_rate": kwargs["sample_rate"], "strides": kwargs.get("encoder_rates", [2, 4, 8, 8]),
           "parameters_dac_encoder_decoder": sum(p.numel() for n, p in model.named_parameters()
                                                 if not n.startswith("quantizer")),
           "parameters_ours": sum(p.numel() for p in codec.parameters()),
           "latent_channels": int(theirs_z.shape[1]),
           "encoder_max_abs": float((theirs_z - ours_z).abs().max()),
           "decoder_max_abs": float((theirs_audio - ours_audio[..., :length]).abs().max()),
           "dac_decoded_samples": length, "ours_decoded_samples": int(ours_audio.shape[-1]),
           "padding_is_zero": bool((ours_audio[..., length:] == 0).all()),
           "seconds": round(time.perf_counter() - started, 2)}
    # DAC's quantizer as our rvq bottleneck (``targetkl import --bottleneck rvq``): the same codes and latent
    from targetkl.foreign.importer import import_codec
    from targetkl.runs import load_run

    import_codec(path, folder / f"rvq-{name}", bottleneck="rvq")
    rvq = load_run(folder / f"rvq-{name}").model.bottleneck
    theirs_q, theirs_codes, *_ = model.quantizer(theirs_z)
    ours_q = rvq(theirs_z)
    row["rvq_codes_equal"] = bool(torch.equal(theirs_codes, ours_q.codes))
    row["rvq_latent_max_abs"] = float((theirs_q - ours_q.z).abs().max())
    row["passed"] = row["encoder_max_abs"] <= TOLERANCE and row["decoder_max_abs"] <= TOLERANCE \
        and row["rvq_codes_equal"] and row["rvq_latent_max_abs"] <= TOLERANCE
    return row, {"audio": audio[0].contiguous(), "z": theirs_z[0].contiguous(), "decoded": theirs_audio[0].contiguous(),
                 "codes": theirs_codes[0].contiguous(), "z_q": theirs_q[0].contiguous()}


def package_is_refused(folder: Path) -> dict:
    from targetkl.foreign.dac import ForeignCheckpointError, read_checkpoint

    model = perturbed_dac(LAYOUTS["tiny"], 1)
    path = folder / "dac-package.pth"
    model.save(str(path))  # DAC's default: a torch.package
    try:
        read_checkpoint(path)
    except ForeignCheckpointError as error:
        return {"torch_package_refused": True, "message": str(error)}
    return {"torch_package_refused": False}


def perturb(model: torch.nn.Module, seed: int | None = None) -> torch.nn.Module:
    """Move every weight of ``model`` off its initial value by seeded noise scaled to it; returns it in eval mode."""
    if seed is not None:
        torch.manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter) * (parameter.abs().mean() + 0.1))
    return model.eval()


SAT_LAYOUTS = {  # (sample rate, encoder config, decoder config, how it is saved)
    "tiny": (16000, dict(in_channels=1, channels=4, c_mults=[1, 2], strides=[2, 4], latent_dim=8, use_snake=True),
             dict(out_channels=1, channels=6, c_mults=[1, 2], strides=[2, 4], latent_dim=4, use_snake=True,
                  final_tanh=False), "safetensors"),
    "tiny-stereo-tanh": (16000, dict(in_channels=2, channels=4, c_mults=[1, 2], strides=[2, 4], latent_dim=8,
                                     use_snake=True),
                         dict(out_channels=2, channels=4, c_mults=[1, 2], strides=[2, 4], latent_dim=4,
                              use_snake=True), "pretransform-ckpt"),
    "sao": (44100, dict(in_channels=2, channels=128, c_mults=[1, 2, 4, 8, 16], strides=[2, 4, 4, 8, 8],
                        latent_dim=128, use_snake=True),
            dict(out_channels=2, channels=128, c_mults=[1, 2, 4, 8, 16], strides=[2, 4, 4, 8, 8], latent_dim=64,
                 use_snake=True, final_tanh=False), "safetensors"),
}


def sat_autoencoder_config(sample_rate: int, encoder: dict, decoder: dict) -> dict:
    return {"model_type": "autoencoder", "sample_rate": sample_rate, "audio_channels": encoder["in_channels"],
            "model": {"encoder": {"type": "oobleck", "config": encoder},
                      "decoder": {"type": "oobleck", "config": decoder},
                      "bottleneck": {"type": "vae"}, "latent_dim": decoder["latent_dim"],
                      "downsampling_ratio": math.prod(encoder["strides"]), "io_channels": encoder["in_channels"]}}


def test_audio(channels: int, samples: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(channels)
    return 0.5 * torch.sin(torch.linspace(0, 2000, samples)).expand(1, channels, samples) \
        * torch.rand(1, channels, samples, generator=generator)


def our_imported(source: Path, folder: Path, name: str):
    from targetkl.foreign.importer import import_codec
    from targetkl.runs import load_run

    run = folder / f"run-{name}"
    import_codec(source, run, bottleneck="vae")
    return run, load_run(run).model


@torch.no_grad()
def sat_compare(name: str, folder: Path) -> tuple[dict, dict]:
    from safetensors.torch import save_file
    from stable_audio_tools.models.autoencoders import create_autoencoder_from_config

    sample_rate, encoder, decoder, saved = SAT_LAYOUTS[name]
    config = sat_autoencoder_config(sample_rate, encoder, decoder)
    model = perturb(create_autoencoder_from_config(config), 3)
    source = folder / f"sat-{name}"
    source.mkdir()
    if saved == "safetensors":
        (source / "model_config.json").write_text(json.dumps(config, indent=2))
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(source / "model.safetensors"))
    else:  # a whole model whose pretransform is the autoencoder, as a training checkpoint
        whole = {"model_type": "diffusion_cond", "sample_rate": sample_rate, "audio_channels": encoder["in_channels"],
                 "model": {"pretransform": {"type": "autoencoder", "iterate_batch": True, "config": config["model"]},
                           "diffusion": {"type": "dit", "config": {}}}}
        (source / "model_config.json").write_text(json.dumps(whole, indent=2))
        state = {f"pretransform.model.{k}": v for k, v in model.state_dict().items()}
        state["model.model.some_transformer.weight"] = torch.zeros(2)
        torch.save({"state_dict": state}, source / "model.ckpt")
    started = time.perf_counter()
    run, codec = our_imported(source, folder, f"sat-{name}")
    hop = math.prod(encoder["strides"])
    audio = test_audio(encoder["in_channels"], (sample_rate // hop) * hop)
    theirs_h, ours_h = model.encoder(audio), codec.encoder(audio)
    z = theirs_h[:, : decoder["latent_dim"]]
    theirs_audio, ours_audio = model.decoder(z), codec.decoder(z)
    row = {"layout": name, "saved_as": saved, "sample_rate": sample_rate,
           "parameters_sat": sum(p.numel() for p in model.parameters()),
           "parameters_ours": sum(p.numel() for p in codec.parameters()),
           "encoder_max_abs": float((theirs_h - ours_h).abs().max()),
           "decoder_max_abs": float((theirs_audio - ours_audio).abs().max()),
           "seconds": round(time.perf_counter() - started, 2)}
    row["passed"] = row["encoder_max_abs"] <= TOLERANCE and row["decoder_max_abs"] <= TOLERANCE \
        and row["parameters_sat"] == row["parameters_ours"]
    if name != "sao":
        row.update(sat_export_roundtrip(run, codec, config, folder, name, audio))
    return row, {"audio": audio[0].contiguous(), "h": theirs_h[0].contiguous(), "decoded": theirs_audio[0].contiguous()}


@torch.no_grad()
def sat_export_roundtrip(run: Path, codec, config: dict, folder: Path, name: str, audio: torch.Tensor) -> dict:
    """Export the imported run with ``--format stable-audio-tools`` and load it with stable-audio-tools' own code."""
    import soundfile
    from stable_audio_tools.models.autoencoders import create_autoencoder_from_config
    from stable_audio_tools.models.factory import create_pretransform_from_config
    from stable_audio_tools.models.utils import copy_state_dict, load_ckpt_state_dict

    from targetkl.export import export_run

    data = folder / f"data-{name}"
    data.mkdir()
    for index in range(4):
        soundfile.write(data / f"clip{index}.wav", test_audio(1, 16000)[0, 0].numpy() * (index + 1) / 4, 16000)
    out = folder / f"export-{name}"
    export_run(run, out, data, "stable-audio-tools")
    exported = json.loads((out / "model_config.json").read_text())
    model = create_autoencoder_from_config(exported).eval()
    state = load_ckpt_state_dict(str(out / "model.safetensors"))
    landed = set(state) == set(model.state_dict()) and all(
        state[k].shape == v.shape for k, v in model.state_dict().items())
    copy_state_dict(model, state)
    pretransform = create_pretransform_from_config(json.loads((out / "pretransform.json").read_text()),
                                                   exported["sample_rate"])
    copy_state_dict(pretransform.model, state)  # a diffusion model's checkpoint holds them as pretransform.model.*
    pretransform.eval()
    h = codec.encoder(audio)
    z = h[:, : codec.latent_dim]
    scale = json.loads((out / "pretransform.json").read_text())["scale"]
    return {"export_every_tensor_loaded": landed,
            "export_encoder_max_abs": float((model.encoder(audio) - h).abs().max()),
            "export_decoder_max_abs": float((model.decoder(z) - codec.decoder(z)).abs().max()),
            "export_pretransform_scale": scale,
            "export_pretransform_decode_max_abs": float(
                (pretransform.decode(z / scale) - codec.decoder(z)).abs().max()),
            "export_model_config_equal": exported["model"]["encoder"] == config["model"]["encoder"]
            and {k: v for k, v in exported["model"]["decoder"]["config"].items() if k != "final_tanh"}
            == {k: v for k, v in config["model"]["decoder"]["config"].items() if k != "final_tanh"}}


DIFFUSERS_LAYOUTS = {
    "tiny": dict(encoder_hidden_size=8, downsampling_ratios=[2, 4], channel_multiples=[1, 2], decoder_channels=6,
                 decoder_input_channels=4, audio_channels=1, sampling_rate=16000),
    "sao": dict(),  # diffusers' defaults: Stable Audio Open's VAE
}


@torch.no_grad()
def diffusers_compare(name: str, folder: Path) -> tuple[dict, dict]:
    from diffusers import AutoencoderOobleck

    model = perturb(AutoencoderOobleck(**DIFFUSERS_LAYOUTS[name]), 4)
    source = folder / f"diffusers-{name}"
    model.save_pretrained(source)
    started = time.perf_counter()
    _, codec = our_imported(source, folder, f"diffusers-{name}")
    hop = math.prod(model.config.downsampling_ratios)
    audio = test_audio(model.config.audio_channels, (model.config.sampling_rate // hop) * hop)
    theirs_mean = model.encode(audio).latent_dist.mean
    ours_mean = codec.encode(audio).z
    theirs_audio, ours_audio = model.decode(theirs_mean).sample, codec.decoder(theirs_mean)
    row = {"layout": name, "sample_rate": model.config.sampling_rate,
           "parameters_diffusers": sum(p.numel() for p in model.parameters()),
           "parameters_ours": sum(p.numel() for p in codec.parameters()),
           "posterior_mean_max_abs": float((theirs_mean - ours_mean).abs().max()),
           "posterior_std_max_abs": float((model.encode(audio).latent_dist.std - codec.encode(audio).std).abs().max()),
           "decoder_max_abs": float((theirs_audio - ours_audio).abs().max()),
           "seconds": round(time.perf_counter() - started, 2)}
    row["passed"] = max(row["posterior_mean_max_abs"], row["posterior_std_max_abs"], row["decoder_max_abs"]) \
        <= TOLERANCE and row["parameters_diffusers"] == row["parameters_ours"]
    return row, {"audio": audio[0].contiguous(), "mean": theirs_mean[0].contiguous(),
                 "decoded": theirs_audio[0].contiguous()}


@torch.no_grad()
def loss_checks() -> dict:
    """Our losses and discriminators beside descript-audio-codec's ``dac.nn.loss`` and ``Discriminator`` on the same
    audio (44.1 kHz, DAC's 44 kHz training settings): where the definitions agree the values must too."""
    from audiotools import AudioSignal
    from dac.model.discriminator import Discriminator as DacDiscriminator
    from dac.nn.loss import MelSpectrogramLoss, MultiScaleSTFTLoss

    from targetkl.config import resolve
    from targetkl.losses import MultiResolutionSTFTLoss, MultiScaleMelLoss, magnitude, mel_filterbank
    from targetkl.models.discriminators import build_discriminator

    sample_rate = 44100
    reference = test_audio(1, sample_rate)
    estimate = reference + 0.05 * torch.randn(reference.shape, generator=torch.Generator().manual_seed(6))
    theirs_x, theirs_y = AudioSignal(estimate.clone(), sample_rate), AudioSignal(reference.clone(), sample_rate)
    windows, mels = [32, 64, 128, 256, 512, 1024, 2048], [5, 10, 20, 40, 80, 160, 320]  # DAC's conf/base.yml
    scales = []
    for window, bins in zip(windows, mels):
        theirs = float(MelSpectrogramLoss(n_mels=[bins], window_lengths=[window], mag_weight=0.0, pow=1.0,
                                          clamp_eps=1e-5, mel_fmin=[0.0], mel_fmax=[None])(theirs_x, theirs_y))
        filters = mel_filterbank(sample_rate, window, bins)
        ours = float(((filters @ magnitude(estimate, window)).clamp_min(1e-5).log10()
                      - (filters @ magnitude(reference, window)).clamp_min(1e-5).log10()).abs().mean())
        scales.append({"window": window, "mel_bins": bins, "dac": theirs, "ours": ours, "abs_diff": abs(theirs - ours)})
    dac_mel = float(MelSpectrogramLoss(n_mels=mels, window_lengths=windows, mag_weight=0.0, pow=1.0, clamp_eps=1e-5,
                                       mel_fmin=[0.0] * 7, mel_fmax=[None] * 7)(theirs_x, theirs_y))
    ours_mel = float(MultiScaleMelLoss(sample_rate, tuple(windows))(estimate, reference))
    dac_stft = float(MultiScaleSTFTLoss(window_lengths=[2048, 512])(theirs_x, theirs_y))
    ours_stft = float(MultiResolutionSTFTLoss((2048, 512))(estimate, reference))
    config = resolve("dac-44k")
    ours_disc = build_discriminator(config.loss, sample_rate).eval()
    theirs_disc = DacDiscriminator(sample_rate=sample_rate).eval()
    theirs_out = theirs_disc(reference)
    ours_scores, ours_features = ours_disc(reference)
    return {"mel_per_scale": scales, "mel_per_scale_max_abs": max(r["abs_diff"] for r in scales),
            "mel_dac_sum_over_scales": dac_mel, "mel_ours_mean_over_scales": ours_mel,
            "stft_dac_log10_power_plus_magnitude_l1": dac_stft, "stft_ours_convergence_plus_log_l1": ours_stft,
            "discriminator_members": {"dac": len(theirs_out), "ours": len(ours_scores)},
            "discriminator_parameters": {"dac": sum(p.numel() for p in theirs_disc.parameters()),
                                         "ours": sum(p.numel() for p in ours_disc.parameters())},
            "discriminator_feature_maps_per_member": {"dac": [len(out) - 1 for out in theirs_out],
                                                      "ours": [len(f) for f in ours_features]},
            "discriminator_score_shapes": {"dac": [list(out[-1].shape) for out in theirs_out],
                                           "ours": [list(score.shape) for score in ours_scores]},
            "passed": max(r["abs_diff"] for r in scales) <= TOLERANCE}


def copy_tree(source: Path, target: Path) -> None:
    import shutil

    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write-fixtures", action="store_true", help=f"write the tiny layouts to {FIXTURES}")
    parser.add_argument("--checks", default="dac,sat,diffusers,losses",
                        help="comma-separated: dac, sat, diffusers, losses")
    parser.add_argument("--layouts", default=",".join(LAYOUTS), help="comma-separated subset of the DAC layouts")
    args = parser.parse_args()
    from safetensors.torch import save_file

    checks = args.checks.split(",")
    report = {"torch": torch.__version__, "tolerance": TOLERANCE}
    passed = True
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        if "dac" in checks:
            report.update(dac_checks(args, folder))
            passed &= all(r["passed"] for r in report["dac"]) and report["torch_package_refused"]
        for check, layouts, compare_one in (("sat", SAT_LAYOUTS, sat_compare),
                                            ("diffusers", DIFFUSERS_LAYOUTS, diffusers_compare)):
            if check not in checks:
                continue
            rows = []
            for name in layouts:
                row, tensors = compare_one(name, folder)
                rows.append(row)
                print(json.dumps(row), flush=True)
                if args.write_fixtures and name.startswith("tiny"):
                    FIXTURES.mkdir(parents=True, exist_ok=True)
                    copy_tree(folder / f"{check}-{name}", FIXTURES / f"{check}-{name}")
                    save_file(tensors, str(FIXTURES / f"{check}-{name}.safetensors"))
            report[check] = rows
            passed &= all(r["passed"] and r.get("export_every_tensor_loaded", True)
                          and max(r.get("export_encoder_max_abs", 0), r.get("export_decoder_max_abs", 0),
                                  r.get("export_pretransform_decode_max_abs", 0)) <= TOLERANCE
                          and r.get("export_model_config_equal", True) for r in rows)
        if "losses" in checks:
            report["losses"] = loss_checks()
            passed &= report["losses"]["passed"]
        if "sat" in checks:
            import importlib.metadata

            report["stable_audio_tools"] = importlib.metadata.version("stable-audio-tools")
        if "diffusers" in checks:
            import diffusers

            report["diffusers"] = diffusers.__version__
    report["passed"] = bool(passed)
    print(json.dumps(report, indent=2))
    return 0 if passed else 1


def dac_checks(args, folder: Path) -> dict:
    import dac
    from safetensors.torch import save_file

    rows = []
    for name in args.layouts.split(","):
        row, tensors = compare(name, LAYOUTS[name], folder)
        rows.append(row)
        if args.write_fixtures and name.startswith("tiny"):
            FIXTURES.mkdir(parents=True, exist_ok=True)
            (FIXTURES / f"dac-{name}.pth").write_bytes((folder / f"dac-{name}.pth").read_bytes())
            save_file(tensors, str(FIXTURES / f"dac-{name}.safetensors"))
    return {"descript_audio_codec": dac.__version__, "dac": rows, **package_is_refused(folder)}


if __name__ == "__main__":
    raise SystemExit(main())
