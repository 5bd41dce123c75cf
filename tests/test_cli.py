import json
import subprocess

import numpy as np
import pytest
import soundfile as sf

from targetkl.cli import build_parser, main

def _subcommands() -> dict:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return action.choices


def test_help_for_every_subcommand_names_its_options(capsys):
    from targetkl.config import PRESETS

    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    subcommands = _subcommands()
    assert {"demo", "corpus", "index", "train", "eval", "encode", "decode", "compress", "decompress", "sweep",
            "controllers", "sanity", "export", "pre-encode", "gen-train", "generate", "select"} <= set(subcommands)
    for name in subcommands:
        assert name in text
        with pytest.raises(SystemExit) as exit_info:
            main([name, "--help"])
        assert exit_info.value.code == 0
        help_text = capsys.readouterr().out
        assert help_text.startswith(f"usage: targetkl {name}"), name
        assert "%%" not in help_text, name  # an escaped percent printed as is
        description = subcommands[name].description
        assert "write" in description.lower() or "prints" in description.lower(), name  # says what it writes
        for action in subcommands[name]._actions:  # every option is listed with a help text
            if action.option_strings and action.dest != "help":
                assert action.option_strings[-1] in help_text and action.help, (name, action.option_strings)
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    unwrapped = "".join(capsys.readouterr().out.split())  # argparse wraps lines at hyphens too
    assert all(preset in unwrapped for preset in PRESETS)
    main_text = "".join(text.split())
    assert all(preset in main_text for preset in PRESETS)  # `targetkl --help` names every registered preset


def test_every_subcommand_is_one_module_whose_choices_come_from_the_registries(monkeypatch, capsys):
    """A subcommand is a module of targetkl.commands; a part registered anywhere shows in the help unchanged."""
    from targetkl.bottlenecks.factory import BOTTLENECKS
    from targetkl.commands import command_modules
    from targetkl.control import CONTROLLERS
    from targetkl.eval.sweep import BASELINES
    from targetkl.models.architectures import ARCHITECTURES, architecture

    modules = command_modules()
    assert [module.NAME for module in modules] == list(_subcommands())
    assert all(callable(m.run) and callable(m.add_arguments) and m.HELP for m in modules)
    monkeypatch.setitem(CONTROLLERS, "mycontroller", CONTROLLERS["lagrange"])
    monkeypatch.setitem(BOTTLENECKS, "mybottleneck", BOTTLENECKS["vae"])
    monkeypatch.setitem(ARCHITECTURES, "myarchitecture", architecture("dac"))
    texts = {}
    for name in ("train", "sweep", "sanity", "controllers"):
        with pytest.raises(SystemExit):
            main([name, "--help"])
        texts[name] = "".join(capsys.readouterr().out.split())
    assert "mycontroller" in texts["train"] and "mybottleneck" in texts["train"]
    assert "mycontroller" in texts["sanity"] and "mycontroller" in texts["controllers"]
    assert "myarchitecture" in texts["sweep"] and all(baseline in texts["sweep"] for baseline in BASELINES)


def test_progress_bars_show_on_a_terminal_only(small_corpus, tmp_path):
    """`index` draws a bar with an ETA on a terminal; nothing on a pipe, nor on a terminal under -q."""
    import os
    import pty
    import subprocess
    import sys

    def stderr_of(args, terminal: bool) -> str:
        env = {**os.environ, "TARGETKL_CACHE": str(tmp_path / f"cache-{terminal}-{len(args)}")}
        if not terminal:
            return subprocess.run(args, capture_output=True, text=True, env=env, check=True).stderr
        master, slave = pty.openpty()
        import fcntl
        import struct
        import termios

        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a new pty is 0 columns wide
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=slave, env=env)
        os.close(slave)
        chunks = []
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert process.wait(timeout=120) == 0
        os.close(master)
        return b"".join(chunks).decode(errors="replace")

    command = [sys.executable, "-m", "targetkl.cli", "index", str(small_corpus), "--workers", "1"]
    shown = stderr_of(command, terminal=True)
    assert "indexing audio" in shown and "<" in shown  # tqdm's elapsed<remaining
    assert "indexing audio" not in stderr_of(command, terminal=False)
    assert "indexing audio" not in stderr_of(command + ["-q"], terminal=True)


def test_console_script_is_installed():
    import sysconfig
    from pathlib import Path

    script = Path(sysconfig.get_path("scripts")) / "targetkl"  # where pip put this interpreter's scripts
    assert script.is_file(), f"no targetkl console script in {script.parent}: pip install -e ."
    result = subprocess.run([str(script), "--version"], capture_output=True, text=True, env={"PATH": ""})
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


def _one_line_refusal(capsys, argv, *expected):
    """``main(argv)`` exits 2 with one ``error:`` line containing every ``expected`` text (no traceback)."""
    code = main(argv)
    error = capsys.readouterr().err.strip()
    assert code == 2, (argv, error)
    assert error.startswith("error: ") and len(error.splitlines()) == 1 and "Traceback" not in error, error
    for text in expected:
        assert text in error, (text, error)
    return error


def test_hostile_configs_paths_and_latents_are_one_line_errors(trained_run, small_corpus, tmp_path, capsys):
    # each of these is one line, never a traceback
    out = str(tmp_path / "r")
    train = ["train", "--data", str(small_corpus), "--out", out, "-q"]
    yaml_file, toml_file = tmp_path / "steps.yaml", tmp_path / "lr.toml"
    yaml_file.write_text("train: {steps: [1, 2]}\n")
    toml_file.write_text("[train]\nlr = {a = 1}\n")
    _one_line_refusal(capsys, train + ["--config", str(yaml_file)], "steps.yaml", "train.steps", "integer")
    _one_line_refusal(capsys, train + ["--config", str(toml_file)], "lr.toml", "train.lr")
    _one_line_refusal(capsys, train + ["--set", "train.lr=nan"], "train.lr", "nan")
    _one_line_refusal(capsys, ["sweep", "--data", str(small_corpus), "--out", str(tmp_path / "s"), "--kbps", "abc"],
                      "--kbps", "abc")
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    _one_line_refusal(capsys, ["train", "--data", str(small_corpus), "--out", str(a_file), "-q"], "a_file")
    source = str(sorted((small_corpus / "clips").glob("*.wav"))[0])
    missing = tmp_path / "no_such_folder"
    _one_line_refusal(capsys, ["encode", str(trained_run), source, str(missing / "x.safetensors")], "no_such_folder")
    _one_line_refusal(capsys, ["compress", str(trained_run), source, str(missing / "x.tkl")], "no_such_folder")
    _one_line_refusal(capsys, ["compress", str(trained_run), source, str(tmp_path)], str(tmp_path), "folder")
    latent, tkl = tmp_path / "x.safetensors", tmp_path / "x.tkl"
    assert main(["encode", str(trained_run), source, str(latent)]) == 0
    assert main(["compress", str(trained_run), source, str(tkl)]) == 0
    capsys.readouterr()
    _one_line_refusal(capsys, ["decode", str(trained_run), str(latent), str(missing / "x.wav")], "no_such_folder")
    _one_line_refusal(capsys, ["decompress", str(trained_run), str(tkl), str(missing / "x.wav")], "no_such_folder")
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(latent), "pt") as handle:
        tensors, metadata = {k: handle.get_tensor(k) for k in handle.keys()}, handle.metadata()
    save_file(tensors, str(tmp_path / "bad.safetensors"), {**metadata, "num_samples": "abc"})
    _one_line_refusal(capsys, ["decode", str(trained_run), str(tmp_path / "bad.safetensors"),
                               str(tmp_path / "o.wav")], "bad.safetensors", "num_samples")
    broken = tmp_path / "broken_run"
    broken.mkdir()
    for item in trained_run.iterdir():
        (broken / item.name).symlink_to(item)
    (broken / "config.json").unlink()
    saved = json.loads((trained_run / "config.json").read_text())
    saved["model"]["strides"] = 5
    (broken / "config.json").write_text(json.dumps(saved))
    _one_line_refusal(capsys, ["eval", str(broken), "--data", str(small_corpus)], "config.json", "model.strides")


def test_wrong_but_usable_inputs_are_refused_or_warned(small_corpus, tmp_path, capsys, caplog):
    _one_line_refusal(capsys, ["train", "--data", str(small_corpus), "--out", str(tmp_path / "nan"),
                               "--target-kbps", "nan", "-q"], "target_kbps")
    assert not (tmp_path / "nan" / "config.json").exists()
    folder = tmp_path / "odd"
    folder.mkdir()
    clips = sorted((small_corpus / "clips").glob("*.wav"))[:4]
    for clip in clips:
        (folder / clip.name).write_bytes(clip.read_bytes())
    whole = clips[0].read_bytes()
    (folder / "truncated.wav").write_bytes(whole[: len(whole) // 2])
    sf.write(str(folder / "one_sample.wav"), np.zeros(1, dtype=np.float32), 16000)
    from targetkl.data import load_folder

    with caplog.at_level("WARNING"):
        load_folder(folder, 16000, "all", 0.0, -20.0, progress=False)
    text = caplog.text
    assert "truncated.wav: truncated: the header promises" in text
    assert "one_sample.wav" in text and "very short: 1 samples" in text
