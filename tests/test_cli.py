import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from targetkl.cli import build_parser, main

SUBCOMMANDS = ["demo", "corpus", "train", "eval", "encode", "decode", "compress", "decompress", "sweep", "controllers",
               "sanity", "pre-encode", "gen-train", "generate", "select"]


def test_help_for_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for name in SUBCOMMANDS:
        assert name in text
    for name in SUBCOMMANDS:
        with pytest.raises(SystemExit) as exit_info:
            main([name, "--help"])
        assert exit_info.value.code == 0
        assert len(capsys.readouterr().out.splitlines()) > 4


def test_console_script_is_installed():
    result = subprocess.run([sys.executable, "-m", "targetkl.cli", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and "targetkl" in result.stdout


@pytest.fixture(scope="module")
def trained_run(small_corpus, tmp_path_factory):
    run = tmp_path_factory.mktemp("cli") / "run"
    code = main(["train", "--data", str(small_corpus), "--out", str(run), "--steps", "3", "--batch-size", "2",
                 "--set", "train.checkpoint_every=3", "--set", "model.decoder_dim=16", "-q"])
    assert code == 0
    return run


def test_eval_writes_the_contract_keys(trained_run, small_corpus, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert main(["eval", str(trained_run), "--data", str(small_corpus), "--json", str(out), "-q"]) == 0
    result = json.loads(out.read_text())
    for key in ("target_kbps", "rate_kbps", "frame_rate", "mel_distance", "stft_distance", "si_sdr", "pesq", "stoi",
                "visqol"):
        assert key in result
    assert result["target_kbps"] == 2.0 and result["frame_rate"] == 50.0
    assert result["rate_kbps"] > 0 and np.isfinite(result["mel_distance"])
    assert 1.0 <= result["visqol"] <= 5.0
    assert "measured rate" in capsys.readouterr().out


def test_encode_decode_round_trip(trained_run, small_corpus, tmp_path):
    from targetkl.latents import read_latent_file

    source = sorted((small_corpus / "clips").glob("*.wav"))[0]
    latent = tmp_path / "x.safetensors"
    decoded = tmp_path / "x.wav"
    assert main(["encode", str(trained_run), str(source), str(latent)]) == 0
    tensors, metadata = read_latent_file(latent)
    assert tensors["latent"].shape == (16, 25)  # 0.5 s at 16 kHz, hop 320
    assert metadata["sample_rate"] == "16000" and float(metadata["frame_rate"]) == 50.0
    assert tensors["std"].shape == tensors["latent"].shape
    assert main(["decode", str(trained_run), str(latent), str(decoded)]) == 0
    audio, rate = sf.read(decoded)
    assert rate == 16000 and len(audio) == sf.info(source).frames


def test_bad_inputs_are_one_line_errors(trained_run, small_corpus, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["train", "--data", str(empty), "--out", str(tmp_path / "r"), "--steps", "1", "-q"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and str(empty) in error and len(error.strip().splitlines()) == 1
    assert main(["eval", str(tmp_path / "nothing"), "--data", str(small_corpus)]) == 2
    assert "config.json" in capsys.readouterr().err
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 50)
    assert main(["decode", str(trained_run), str(junk), str(tmp_path / "o.wav")]) == 2
    assert "junk.safetensors" in capsys.readouterr().err
    assert main(["train", "--data", str(small_corpus), "--out", str(tmp_path / "r2"), "--target-kbps", "-2"]) == 2
    assert "target_kbps" in capsys.readouterr().err
    assert main(["corpus", str(tmp_path / "c"), "--clips", "2", "--snr-db", "-3", "-q"]) == 2
    error = capsys.readouterr().err
    assert "--snr-db -3" in error and len(error.strip().splitlines()) == 1


def test_latents_from_another_model_are_refused(trained_run, small_corpus, tmp_path, capsys):
    other = tmp_path / "other"
    assert main(["train", "--data", str(small_corpus), "--out", str(other), "--steps", "1", "--seed", "5",
                 "--batch-size", "2", "--set", "model.decoder_dim=16", "-q"]) == 0
    source = sorted((small_corpus / "clips").glob("*.wav"))[0]
    latent = tmp_path / "x.safetensors"
    assert main(["encode", str(trained_run), str(source), str(latent)]) == 0
    assert main(["decode", str(other), str(latent), str(tmp_path / "o.wav")]) == 2
    assert "another model" in capsys.readouterr().err


def test_parser_defaults_leave_saved_config_alone():
    args = build_parser().parse_args(["train", "--data", "d", "--out", "o"])
    assert args.target_kbps is None and args.steps is None and args.preset is None


def test_compress_cli_writes_the_rates_and_refuses_a_damaged_file(trained_run, small_corpus, tmp_path, capsys):
    run = trained_run
    clip = next(iter(sorted((small_corpus / "clips").glob("*.wav"))))
    out = tmp_path / "a.tkl"
    assert main(["compress", str(run), str(clip), str(out), "--json", str(tmp_path / "r.json")]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert {"kl_kbps", "payload_kbps", "file_kbps"} <= set(report)
    seconds = sf.info(str(clip)).duration
    assert report["file_kbps"] == pytest.approx(8 * out.stat().st_size / seconds / 1000)
    assert report["payload_kbps"] < report["file_kbps"]
    assert main(["decompress", str(run), str(out), str(tmp_path / "a.wav")]) == 0
    assert sf.info(str(tmp_path / "a.wav")).frames == sf.info(str(clip)).frames
    out.write_bytes(out.read_bytes()[:-7])
    capsys.readouterr()
    assert main(["decompress", str(run), str(out), str(tmp_path / "b.wav")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error:") and "a.tkl" in error and "\n" not in error
    assert not (tmp_path / "b.wav").exists()
