"""Our ``dac`` architecture against descript-audio-codec itself, through fixtures written by
``tools/reference_check.py`` in an environment that holds the real package (DAC's own weights files, inputs and
outputs of its encoder and decoder); and DAC checkpoints that must be refused without executing anything."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from targetkl.config import resolve
from targetkl.foreign.dac import ForeignCheckpointError, codec_weights, config_settings, read_checkpoint
from targetkl.models.codec import build_codec

FIXTURES = Path(__file__).parent / "fixtures" / "reference"


@pytest.mark.parametrize("layout", ["tiny", "tiny-odd"])
def test_dac_weights_files_give_dacs_own_encoder_and_decoder_outputs(layout):
    kwargs, state = read_checkpoint(FIXTURES / f"dac-{layout}.pth")
    settings = config_settings(kwargs)
    assert settings["model.latent_dim"] == kwargs["encoder_dim"] * 2 ** len(kwargs["encoder_rates"])  # DAC's default
    assert settings["model.dac.exact_length"] == (layout == "tiny")  # odd strides: DAC's own layout
    codec = build_codec(resolve("tiny", flags={**settings, "model.bottleneck": "ae"})).eval()
    weights = codec_weights(state)
    assert {k.split(".")[0] for k in weights} == {"encoder", "decoder", "bottleneck"}  # the quantizer: rvq's names
    missing, unexpected = codec.load_state_dict({k: v for k, v in weights.items() if k.startswith(("encoder.",
                                                                                                  "decoder."))},
                                                strict=False)
    assert not unexpected and not [k for k in missing if k.startswith(("encoder.", "decoder."))]
    reference = load_file(str(FIXTURES / f"dac-{layout}.safetensors"))
    with torch.no_grad():
        z = codec.encoder(reference["audio"][None])[0]
        decoded = codec.decoder(reference["z"][None])[0]
    assert torch.allclose(z, reference["z"], atol=1e-4, rtol=0)
    length = reference["decoded"].shape[-1]
    assert torch.allclose(decoded[..., :length], reference["decoded"], atol=1e-4, rtol=0)
    assert decoded.shape[-1] == reference["z"].shape[-1] * codec.hop and (decoded[..., length:] == 0).all()
    if layout == "tiny-odd":
        assert length < decoded.shape[-1]  # DAC's decoder is a few samples short at an odd stride; we pad


class Hostile:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_checkpoints_that_are_not_dac_weights_files_are_refused_in_one_line(tmp_path, capsys):
    hostile = tmp_path / "hostile.pth"
    torch.save({"state_dict": {}, "metadata": {"kwargs": {}}, "payload": Hostile()}, hostile)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes((FIXTURES / "dac-tiny.pth").read_bytes()[:1000])
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    bare = tmp_path / "bare.pth"
    torch.save({"encoder.weight": torch.zeros(2)}, bare)
    package = tmp_path / "package.pth"
    with torch.package.PackageExporter(str(package)) as exporter:
        exporter.save_pickle("model", "model.pkl", {"weights": [1, 2, 3]})
    for path, expected in ((hostile, "weights-only"), (truncated, "weights-only"), (text, "weights-only"),
                           (bare, "metadata.kwargs"), (package, "torch.package"), (tmp_path / "none.pth", "not found")):
        with pytest.raises(ForeignCheckpointError, match=expected) as error:
            read_checkpoint(path)
        assert str(path) in str(error.value) and len(str(error.value).splitlines()) == 1
    assert "must never run" not in capsys.readouterr().out
    with pytest.raises(ForeignCheckpointError, match="do not mirror"):
        config_settings({"encoder_rates": [2, 4], "decoder_rates": [2, 4]})
    with pytest.raises(ForeignCheckpointError, match="not DAC's"):
        config_settings({"channels": 3})
