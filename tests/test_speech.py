"""Speech intelligibility (wer, cer against the caption), honest aggregates and quiet output."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from targetkl.cli import main
from targetkl.eval.asr import edit_distance, error_counts, normalize_text
from targetkl.eval.metrics import aggregate_metrics, unscored_counts


def test_edit_distance_and_error_counts_by_hand():
    assert edit_distance("kitten".split(), "sitting".split()) == 1
    assert edit_distance(list("kitten"), list("sitting")) == 3  # k->s, e->i, +g
    assert normalize_text("Set BLUE, at seven -- please!") == "set blue at seven please"
    counts = error_counts("set blue at seven please", "set blue at eleven")  # one substitution, one deletion
    assert counts["wer_edits"] == 2 and counts["wer_words"] == 5
    assert counts["cer_chars"] == len("set blue at seven please")


def test_aggregates_say_what_they_are():
    rows = [{"si_sdr": -45.0, "mel_distance": 1.0, "stoi": math.nan, "wer_edits": 1.0, "wer_words": 4.0,
             "cer_edits": 0.0, "cer_chars": 10.0},
            {"si_sdr": 3.0, "mel_distance": 2.0, "stoi": 0.5, "wer_edits": 0.0, "wer_words": 6.0,
             "cer_edits": 5.0, "cer_chars": 30.0},
            {"si_sdr": 5.0, "mel_distance": 3.0, "stoi": 0.7, "wer_edits": 3.0, "wer_words": 10.0,
             "cer_edits": 1.0, "cer_chars": 40.0}]
    result = aggregate_metrics(rows)
    assert result["si_sdr"] == 3.0  # the median, not the mean (-12.3)
    assert result["mel_distance"] == pytest.approx(2.0)
    assert result["stoi"] == pytest.approx(0.6)  # the clip it could not score is left out ...
    assert unscored_counts(rows) == {"stoi": 1}  # ... and counted
    assert result["wer"] == pytest.approx(4 / 20)  # pooled: (1 + 0 + 3) / (4 + 6 + 10), not the mean 0.183
    assert result["cer"] == pytest.approx(6 / 80)
    assert not any(key.endswith(("_edits", "_words", "_chars")) for key in result)


def test_speech_corpus_without_espeak_is_one_line(tmp_path, capsys, monkeypatch):
    import shutil

    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert main(["corpus", str(tmp_path / "sp"), "--kind", "speech", "--clips", "2", "-q"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "apt-get install espeak-ng" in error


@pytest.fixture(scope="module")
def speech_corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("speech") / "sp"
    assert main(["corpus", str(out), "--kind", "speech", "--clips", "40", "-q"]) == 0
    return out


def test_speech_corpus_speaks_its_captions(speech_corpus):
    from targetkl.data.speech import WORDS
    from targetkl.eval.asr import recognizer_for

    rows = [json.loads(line) for line in (speech_corpus / "captions.jsonl").read_text().splitlines()]
    assert len(rows) == 40 and len({row["label"] for row in rows}) >= 6  # several voices
    assert all(word in WORDS[slot] for row in rows for word, slot in zip(row["caption"].split(), WORDS))
    assert json.loads((speech_corpus / "corpus.json").read_text())["kind"] == "speech"
    recognizer = recognizer_for(speech_corpus)
    import soundfile as sf

    edits = words = 0
    for row in rows[:12]:
        audio, rate = sf.read(str(speech_corpus / row["path"]))
        counts = error_counts(row["caption"], recognizer.transcribe(audio, rate))
        edits, words = edits + counts["wer_edits"], words + counts["wer_words"]
    assert edits / words < 0.25  # held to the corpus grammar, the recognizer understands espeak-ng
    silence = recognizer.transcribe(np.zeros(16000), 16000)
    assert error_counts(rows[0]["caption"], silence)["wer_edits"] >= 1


def test_sweep_on_speech_reports_wer_and_cer_for_every_system(speech_corpus, tmp_path):
    out = tmp_path / "sweep"
    assert main(["sweep", "--data", str(speech_corpus), "--out", str(out), "--kbps", "1,4", "--baselines",
                 "opus,codec2", "--set", "train.steps=4", "--set", "train.batch_size=2", "--fast", "-q"]) == 0
    rows = json.loads((out / "rd.json").read_text())
    assert {row["system"] for row in rows} == {"vae", "tkl", "opus", "codec2"}
    originals = {row["wer_original"] for row in rows}
    assert len(originals) == 1 and 0 <= originals.pop() < 0.5  # the recognizer's own error, once for all
    for row in rows:
        assert 0 <= row["wer"] and 0 <= row["cer"], row
    best_opus = min(row["wer"] for row in rows if row["system"] == "opus")
    untrained_vae = min(row["wer"] for row in rows if row["system"] == "vae")
    assert best_opus < untrained_vae  # 4 training steps: the VAE is not intelligible yet, Opus at 24 kbps is
    header = (out / "rd.csv").read_text().splitlines()[0].split(",")
    assert {"wer", "cer", "wer_original", "cer_original"} <= set(header)


def test_eval_prints_no_dependency_chatter(small_corpus, tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--data", str(small_corpus), "--out", str(run), "--steps", "2", "--batch-size", "2",
                 "--set", "model.decoder_dim=16", "-q"]) == 0
    result = subprocess.run([sys.executable, "-m", "targetkl.cli", "eval", str(run), "--data", str(small_corpus)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    chatter = [line for line in (result.stderr + result.stdout).splitlines()
               if "INFO" in line or "Warning" in line
               or "warn" in line.lower() and "latent" not in line and "off target" not in line]
    assert not chatter, chatter
    assert "visqol" in result.stdout and "median over clips" in result.stdout
