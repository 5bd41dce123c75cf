"""The corpus index, streamed crops, chunked and batched inference, short audio, the paper preset."""

from __future__ import annotations

import json
import math
import tarfile

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import quick_config
from targetkl.cli import main
from targetkl.data import DataError, ensure_index, load_folder, random_crops
from targetkl.data.audio import load_audio, read_window
from targetkl.inference import CodecRunner, receptive_field_frames


def _tone(seconds: float, rate: int, frequency: float = 440.0, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    mono = 0.3 * np.sin(2 * np.pi * frequency * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
    return mono if channels == 1 else np.stack([mono, -0.5 * mono], axis=1)


def test_index_probes_only_new_or_changed_files(tmp_path, monkeypatch):
    from targetkl.data import index as index_module

    for i in range(3):
        sf.write(tmp_path / f"a{i}.wav", _tone(0.5, 16000, 200 + 100 * i), 16000)
    probed = []
    real = index_module.probe
    monkeypatch.setattr(index_module, "probe", lambda c: probed.append(c["path"]) or real(c))
    first = ensure_index(tmp_path, progress=False)
    assert [e.path for e in first.entries] == ["a0.wav", "a1.wav", "a2.wav"] and len(probed) == 3
    assert first.entries[0].frames == 8000 and first.entries[0].sample_rate == 16000
    assert math.isclose(first.entries[0].duration, 0.5)
    probed.clear()
    ensure_index(tmp_path, progress=False)
    assert probed == []
    sf.write(tmp_path / "a1.wav", _tone(1.0, 16000), 16000)
    sf.write(tmp_path / "b.wav", _tone(0.25, 16000), 16000)
    (tmp_path / "a2.wav").unlink()
    third = ensure_index(tmp_path, progress=False)
    assert sorted(probed) == ["a1.wav", "b.wav"]
    assert [e.path for e in third.entries] == ["a0.wav", "a1.wav", "b.wav"] and third.entries[1].frames == 16000


def test_index_command_reports_files_and_skips(tmp_path, capsys):
    sf.write(tmp_path / "good.wav", _tone(0.5, 16000), 16000)
    (tmp_path / "bad.wav").write_bytes(b"RIFF not really")
    assert main(["index", str(tmp_path), "-q"]) == 0
    out = capsys.readouterr().out
    assert "1 files" in out and "1 skipped" in out and "bad.wav: unreadable audio" in out


def test_manifest_and_shards_give_the_same_clips_as_the_folder(tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    rows = []
    for i in range(6):
        sf.write(folder / f"{i:02d}.flac", _tone(0.4, 16000, 150 + 60 * i), 16000)
        rows.append({"path": str(folder / f"{i:02d}.flac"), "caption": f"tone {i}"})
    manifest = tmp_path / "list.jsonl"
    manifest.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    shard_dir = tmp_path / "shards"
    shard_dir.mkdir()
    for shard in range(2):
        with tarfile.open(shard_dir / f"train-{shard:06d}.tar", "w") as tar:
            for i in range(shard * 3, shard * 3 + 3):
                tar.add(folder / f"{i:02d}.flac", arcname=f"{i:06d}.flac")
                caption = tmp_path / f"{i}.json"
                caption.write_text(json.dumps({"text": f"tone {i}"}))
                tar.add(caption, arcname=f"{i:06d}.json")
    sets = [load_folder(source, 16000, "all", progress=False)
            for source in (folder, manifest, str(shard_dir / "train-{000000..000001}.tar"))]
    for audio_set in sets[1:]:
        assert len(audio_set) == 6
        for a, b in zip(sets[0].clips, audio_set.clips):
            assert np.array_equal(a.audio, b.audio)
    assert [c.caption for c in sets[1].clips] == [f"tone {i}" for i in range(6)]
    assert [c.caption for c in sets[2].clips] == [f"tone {i}" for i in range(6)]
    with pytest.raises(DataError, match="remote shards"):
        load_folder("pipe:aws s3 cp s3://bucket/train-000000.tar -", 16000)


def test_windows_read_from_disk_equal_the_whole_file(tmp_path):
    sf.write(tmp_path / "native.wav", _tone(2.0, 16000, channels=2), 16000)
    sf.write(tmp_path / "other.flac", _tone(2.0, 44100), 44100)
    audio_set = load_folder(tmp_path, 16000, "all", progress=False, loudness_dbfs=None)
    for index, name in enumerate(("native.wav", "other.flac")):
        whole = load_audio(tmp_path / name, 16000)
        window = read_window(audio_set.entries[index], 5000, 7000, 16000)
        tolerance = 0 if name == "native.wav" else 1e-4
        assert np.max(np.abs(window - whole[5000:12000])) <= tolerance, name
        tail = read_window(audio_set.entries[index], len(whole) - 100, 300, 16000)
        assert np.all(tail[100:] == 0)


def test_chunked_and_batched_inference_equal_whole_file_processing():
    config = quick_config()
    torch.manual_seed(0)
    from targetkl.models.codec import build_codec

    model = build_codec(config).eval()
    rng = np.random.default_rng(0)
    audios = [rng.standard_normal(n).astype(np.float32) * 0.1 for n in (16000 * 5 + 123, 16000 * 3, 16000 * 3, 500)]
    whole = [CodecRunner(model, batch_size=1, chunk_seconds=1000).reconstruct([a]) for a in audios]
    chunked, encoded = CodecRunner(model, batch_size=3, chunk_seconds=0.5).reconstruct(audios)
    for (decoded_whole, encoded_whole), decoded, code in zip(whole, chunked, encoded):
        assert code.z.shape == encoded_whole[0].z.shape
        assert torch.allclose(code.z, encoded_whole[0].z, atol=1e-5)
        assert np.allclose(decoded, decoded_whole[0], atol=1e-5)
        assert torch.allclose(code.bits_per_frame, encoded_whole[0].bits_per_frame, rtol=1e-5, atol=1e-6)
    encoder_frames, decoder_frames = receptive_field_frames(model)
    assert 1 <= encoder_frames < 50 and 1 <= decoder_frames < 50


def test_streamed_training_with_workers_resumes_bit_identically(small_corpus, tmp_path):
    from targetkl.train.trainer import Trainer

    config = quick_config(train={"steps": 6, "checkpoint_every": 3, "schedule": "constant"}, data={"workers": 2})
    straight = Trainer(config, small_corpus, tmp_path / "straight", progress=False)
    straight.run()
    half = quick_config(train={"steps": 3, "checkpoint_every": 3, "schedule": "constant"}, data={"workers": 2})
    Trainer(half, small_corpus, tmp_path / "resumed", progress=False).run()
    resumed = Trainer(config, small_corpus, tmp_path / "resumed", progress=False)
    resumed.run()
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    audio_set = load_folder(small_corpus, 16000, "train", progress=False)
    whole = random_crops(audio_set, 4, 1280, seed=1, step=5)
    assert torch.equal(random_crops(audio_set, 4, 1280, seed=1, step=5, rows=range(2, 4)), whole[2:])


def test_eval_reports_a_held_out_clip_shorter_than_every_window(tmp_path, small_corpus, capsys):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(small_corpus, data)
    from targetkl.data.audio import held_out_score

    name = next(f"clips/blip{i}.wav" for i in range(1000) if held_out_score(f"clips/blip{i}.wav") < 1000)
    sf.write(data / name, _tone(0.05, 16000, 2000), 16000)
    run = tmp_path / "run"
    config_file = tmp_path / "quick.json"
    config_file.write_text(json.dumps({"train": {"steps": 2, "batch_size": 2, "checkpoint_every": 2},
                                       "model": {"encoder_dim": 4, "decoder_dim": 16, "latent_dim": 8},
                                       "rate": {"free_steps": 0, "warmup_steps": 0, "calibrate_clips": 2}}))
    assert main(["train", "--data", str(data), "--out", str(run), "--config", str(config_file), "-q"]) == 0
    assert main(["eval", str(run), "--data", str(data), "--json", str(tmp_path / "e.json"), "-q"]) == 0
    result = json.loads((tmp_path / "e.json").read_text())
    held_out = load_folder(data, 16000, "held_out", progress=False)
    assert name in [e.path for e in held_out.entries]
    assert result["clips"] == len(held_out) and math.isfinite(result["mel_distance"])


def test_long_file_round_trips_in_chunks_through_the_cli(tmp_path):
    from targetkl.config import resolve
    from targetkl.runs import load_run
    from targetkl.train.trainer import Trainer

    sf.write(tmp_path / "long.wav", _tone(75.0, 16000), 16000)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(4):
        sf.write(corpus / f"{i}.wav", _tone(0.5, 16000, 300 + 50 * i), 16000)
    config = resolve("tiny", assignments=["train.steps=2", "train.batch_size=2", "rate.free_steps=0",
                                          "rate.warmup_steps=0", "rate.calibrate_clips=2"])
    Trainer(config, corpus, tmp_path / "run", progress=False).run()
    run = str(tmp_path / "run")
    for args in (["compress", run, str(tmp_path / "long.wav"), str(tmp_path / "long.tkl")],
                 ["decompress", run, str(tmp_path / "long.tkl"), str(tmp_path / "back.wav")],
                 ["encode", run, str(tmp_path / "long.wav"), str(tmp_path / "long.safetensors")],
                 ["decode", run, str(tmp_path / "long.safetensors"), str(tmp_path / "decoded.wav")]):
        assert main(args + ["--device", "cpu", "--batch-size", "4"]) == 0
    assert sf.info(str(tmp_path / "back.wav")).frames == 75 * 16000
    decoded, _ = sf.read(str(tmp_path / "decoded.wav"), dtype="float32")
    model = load_run(run).model
    audio = load_audio(tmp_path / "long.wav", 16000)
    whole = CodecRunner(model, chunk_seconds=1000).reconstruct([audio])[0][0]
    assert np.max(np.abs(decoded - np.clip(whole, -1, 1))) <= 1 / 32768 + 1e-5  # 16-bit file, chunked decode
    assert main(["decode", run, str(tmp_path / "long.safetensors"), str(tmp_path / "no" / "such.wav")]) == 2


def test_the_paper_preset_has_its_shape_and_trains_two_steps(tmp_path, small_corpus):
    from targetkl.config import ConfigError, resolve, with_target_nats
    from targetkl.models.codec import build_codec
    from targetkl.train.trainer import Trainer

    config = resolve("dacvae-48k")
    assert config.model.sample_rate == 48000 and config.model.frame_rate == 40.0 and config.model.latent_dim == 128
    assert config.loss.adversarial
    nats = with_target_nats(config, 80)
    assert math.isclose(nats.target_nats_per_frame, 80.0)
    assert math.isclose(with_target_nats(config, 1280).rate.target_kbps, 1280 * 40 / math.log(2) / 1000)
    with pytest.raises(ConfigError):
        with_target_nats(config, float("nan"))
    small = resolve("dacvae-48k", assignments=[
        "model.encoder_dim=4", "model.decoder_dim=32", "model.latent_dim=8", "train.steps=2", "train.batch_size=1",
        "train.checkpoint_every=2", "data.segment_seconds=0.1", "rate.free_steps=0", "rate.warmup_steps=0",
        "rate.calibrate_clips=1", "rate.calibrate_seconds=0.2", "rate.target.kl_lambda=2", "rate.controller=target",
        "rate.target_kbps=0.5", "loss.discriminator_periods=2,3", "loss.discriminator_stft_windows=512"])
    torch.manual_seed(0)
    assert build_codec(small).hop == 1200
    result = Trainer(small, small_corpus, tmp_path / "paper", progress=False).run()
    assert result.step == 2 and math.isfinite(result.last_metrics["loss"])
    assert result.last_metrics["loss/rate_penalty"] >= 0


def test_target_nats_and_kl_lambda_on_the_command_line(tmp_path, small_corpus):
    out = tmp_path / "run"
    assert main(["train", "--data", str(small_corpus), "--out", str(out), "--target-nats", "20", "--kl-lambda", "2",
                 "--steps", "0", "-q"]) == 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["rate"]["controller"] == "target" and saved["rate"]["target"]["kl_lambda"] == 2.0
    assert math.isclose(saved["rate"]["target_kbps"], 20 * 50 / math.log(2) / 1000)
