"""Compare targetkl with the reference packages themselves, weight for weight, and write CI's fixtures.

Runs in a separate virtual environment that holds the real packages (never in CI):

    python -m venv ../refvenv
    ../refvenv/bin/pip install torch==2.11.0 torchaudio==2.11.0 descript-audio-codec==1.0.0
    PYTHONPATH=src ../refvenv/bin/python tools/reference_check.py [--write-fixtures]

For each DAC layout (tiny ones with even and odd strides, and the released 16, 24 and 44.1 kHz layouts at full
size) it builds descript-audio-codec's ``DAC``, moves every weight off its initial value (seeded noise), saves it
as DAC's weights file (``save(path, package=False)``), reads that file with :mod:`targetkl.foreign.dac` into our
``dac`` architecture (bottleneck ``ae``: the latent is DAC's continuous one) and compares, on the same
one-second input, the encoder outputs and the decoder outputs (``max_abs`` must be <= 1e-4). It also checks that
DAC's default save format (a torch.package) is refused. Prints JSON; ``--write-fixtures`` writes the tiny
layouts' weights files and inputs/outputs to ``tests/fixtures/reference/`` (a few hundred KB) for
``tests/test_reference.py``.
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

    torch.manual_seed(seed)
    model = dac.DAC(**kwargs).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter) * (parameter.abs().mean() + 0.1))
    return model


def our_codec(path: Path):
    from targetkl.config import resolve
    from targetkl.foreign.dac import codec_weights, config_settings, read_checkpoint
    from targetkl.models.codec import build_codec

    kwargs, state = read_checkpoint(path)
    flags = {**config_settings(kwargs, str(path)), "model.bottleneck": "ae"}
    codec = build_codec(resolve("tiny", flags=flags)).eval()
    missing, unexpected = codec.load_state_dict(codec_weights(state), strict=False)
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
    row["passed"] = row["encoder_max_abs"] <= TOLERANCE and row["decoder_max_abs"] <= TOLERANCE
    return row, {"audio": audio[0].contiguous(), "z": theirs_z[0].contiguous(), "decoded": theirs_audio[0].contiguous()}


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write-fixtures", action="store_true", help=f"write the tiny layouts to {FIXTURES}")
    parser.add_argument("--layouts", default=",".join(LAYOUTS), help="comma-separated subset of the layouts")
    args = parser.parse_args()
    import dac
    from safetensors.torch import save_file

    rows = []
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        for name in args.layouts.split(","):
            row, tensors = compare(name, LAYOUTS[name], folder)
            rows.append(row)
            if args.write_fixtures and name.startswith("tiny"):
                FIXTURES.mkdir(parents=True, exist_ok=True)
                (FIXTURES / f"dac-{name}.pth").write_bytes((folder / f"dac-{name}.pth").read_bytes())
                save_file(tensors, str(FIXTURES / f"dac-{name}.safetensors"))
        refused = package_is_refused(folder)
    report = {"descript_audio_codec": dac.__version__, "torch": torch.__version__, "tolerance": TOLERANCE,
              "dac": rows, **refused}
    print(json.dumps(report, indent=2))
    return 0 if all(r["passed"] for r in rows) and refused["torch_package_refused"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
