import hashlib
import json
import logging

import numpy as np
import pytest
import soundfile as sf

from targetkl.data import DataError, load_audio, load_folder, random_crops
from targetkl.data.audio import normalize_loudness, split_paths
from targetkl.data.corpus import synthesize_clip, write_corpus


def _digest(folder):
    return hashlib.sha256(b"".join((folder / "clips" / f).read_bytes()
                                   for f in sorted(p.name for p in (folder / "clips").iterdir()))).hexdigest()


def test_corpus_is_reproducible_and_captioned(tmp_path):
    a = write_corpus(tmp_path / "a", clips=14, seconds=0.25, progress=False)
    b = write_corpus(tmp_path / "b", clips=14, seconds=0.25, progress=False)
    assert _digest(a) == _digest(b)
    rows = [json.loads(line) for line in (a / "captions.jsonl").read_text().splitlines()]
    assert len(rows) == 14
    assert {r["label"] for r in rows} == {"pluck", "bell", "chord", "chirp", "noise", "percussion", "vowel"}
    for row in rows:
        assert (a / row["path"]).is_file() and row["caption"].startswith("a ")
    settings = json.loads((a / "corpus.json").read_text())
    assert settings == {"clips": 14, "seconds": 0.25, "sample_rate": 16000, "seed": 0, "snr_db": None}


def test_snr_db_lays_every_clip_over_a_noise_floor_that_far_below_it():
    """White noise 50 dB below the clip's RMS, drawn after the clip itself, so the clip under it is exactly
    the default (noise-free) one."""
    for index in range(7):
        noisy, label, caption = synthesize_clip(0, index, 1.0, 16000, snr_db=50.0)
        clean, clean_label, clean_caption = synthesize_clip(0, index, 1.0, 16000)
        assert (label, caption) == (clean_label, clean_caption)
        floor = noisy.astype(np.float64) - clean
        level = 20 * np.log10(np.sqrt(np.mean(floor ** 2)) / np.sqrt(np.mean(clean.astype(np.float64) ** 2)))
        assert level == pytest.approx(-50.0, abs=0.2), (label, level)
    burst, label, _ = synthesize_clip(0, 4, 1.0, 16000, snr_db=50.0)
    gated, _, _ = synthesize_clip(0, 4, 1.0, 16000)
    assert label == "noise" and np.sum(gated == 0) > 4000 and np.sum(burst == 0) == 0


def test_captions_tell_the_truth():
    # A rising sweep rises: more energy above 1 kHz at the end than at the start.
    for index in range(3, 200, 7):
        audio, label, caption = synthesize_clip(0, index, 1.0, 16000)
        assert label == "chirp"
        spectrum_start = np.abs(np.fft.rfft(audio[:2000]))
        spectrum_end = np.abs(np.fft.rfft(audio[-3000:-1000]))
        centroid = lambda s: float((s * np.arange(len(s))).sum() / s.sum())  # noqa: E731
        rising = centroid(spectrum_end) > centroid(spectrum_start)
        assert rising == ("rising" in caption), caption
    # A low plucked string has its fundamental (autocorrelation pitch) below 200 Hz, a high one above 500 Hz.
    for index in range(0, 200, 7):
        audio, label, caption = synthesize_clip(0, index, 1.0, 16000)
        segment = audio[:4000].astype(np.float64)
        correlation = np.correlate(segment, segment, mode="full")[len(segment) - 1:]
        lag = int(np.argmax(correlation[16:400])) + 16
        pitch = 16000 / lag
        if caption.startswith("a low"):
            assert pitch < 200, (caption, pitch)
        elif caption.startswith("a high"):
            assert pitch > 500, (caption, pitch)


def test_loading_resamples_downmixes_and_normalizes(tmp_path):
    stereo = np.stack([np.sin(np.linspace(0, 200, 22050)), np.zeros(22050)], axis=1) * 0.5
    sf.write(tmp_path / "x.flac", stereo, 22050)
    audio = load_audio(tmp_path / "x.flac", 16000)
    assert audio.dtype == np.float32 and abs(len(audio) - 16000) <= 1
    assert np.max(np.abs(audio)) == pytest.approx(0.25, abs=0.01)
    normalized = normalize_loudness(audio, -20.0)
    assert 20 * np.log10(np.sqrt(np.mean(normalized.astype(np.float64) ** 2))) == pytest.approx(-20.0, abs=0.01)
    assert np.array_equal(normalize_loudness(np.zeros(100, np.float32), -20), np.zeros(100))


def test_corrupt_files_are_skipped_with_their_path(tmp_path, caplog):
    write_corpus(tmp_path, clips=6, seconds=0.25, progress=False)
    (tmp_path / "clips" / "broken.wav").write_bytes(b"RIFF\x00\x00garbage")
    (tmp_path / "clips" / "empty.wav").write_bytes(b"")
    with caplog.at_level(logging.WARNING):
        audio_set = load_folder(tmp_path, 16000, "all", progress=False)
    assert len(audio_set) == 6
    assert set(audio_set.skipped) == {"clips/broken.wav", "clips/empty.wav"}
    assert "clips/broken.wav" in caplog.text
    assert all(c.caption for c in audio_set.clips)
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # training indexes once per split: each file's problem is said once
        again = load_folder(tmp_path, 16000, "all", progress=False)
    assert set(again.skipped) == {"clips/broken.wav", "clips/empty.wav"} and "skipping" not in caplog.text


def test_empty_and_missing_folders_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="no audio files"):
        load_folder(tmp_path, 16000)
    with pytest.raises(DataError, match="no such folder"):
        load_folder(tmp_path / "nope", 16000)
    (tmp_path / "bad.wav").write_bytes(b"not audio")
    with pytest.raises(DataError, match="none of the 1 audio files"):
        load_folder(tmp_path, 16000)


def test_split_is_deterministic_and_disjoint():
    paths = [f"clips/{i:04d}.wav" for i in range(500)]
    train, held_out = split_paths(paths, 10.0)
    assert set(train).isdisjoint(held_out) and len(train) + len(held_out) == 500
    assert 25 <= len(held_out) <= 75
    # Adding files never moves an existing file to the other split.
    train2, held_out2 = split_paths(paths + ["extra/a.wav", "extra/b.wav"], 10.0)
    assert set(held_out) <= set(held_out2) and set(train) <= set(train2)
    assert split_paths(["a.wav", "b.wav"], 10.0)[1]


def test_random_crops_depend_only_on_seed_and_step(small_corpus):
    audio_set = load_folder(small_corpus, 16000, "train", progress=False)
    first = random_crops(audio_set, 4, 1280, seed=3, step=10)
    assert first.shape == (4, 1, 1280)
    assert np.array_equal(first, random_crops(audio_set, 4, 1280, seed=3, step=10))
    assert not np.array_equal(first, random_crops(audio_set, 4, 1280, seed=3, step=11))


def test_captions_csv_audiocaps_style(tmp_path):
    write_corpus(tmp_path, clips=3, seconds=0.25, progress=False)
    (tmp_path / "captions.jsonl").unlink()
    (tmp_path / "captions.csv").write_text("audiocap_id,youtube_id,start_time,caption\n1,0000_pluck,0,a string\n"
                                           "2,,0,broken row\n")
    audio_set = load_folder(tmp_path, 16000, "all", progress=False)
    captions = {c.path: c.caption for c in audio_set.clips}
    assert captions["clips/0000_pluck.wav"] == "a string"
