"""Text-to-speech on the latents: tokens, the even spread of text over frames, the duration rule, masked
batches, and `select --task tts` scored by speech recognition between its floor and its ceiling."""

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from targetkl.cli import main
from targetkl.gen.conditioning import SpeechConditioning
from targetkl.gen.dataset import LatentSet
from targetkl.gen.model import LatentDiT, stretch_indices
from targetkl.gen.tokens import PAD, UNKNOWN, Vocabulary, phonemes


def test_vocabulary_reads_characters_and_espeak_phonemes():
    vocabulary = Vocabulary.build("chars", ["Set blue", "lay red"])
    assert vocabulary.symbols == sorted(set("set bluelay red"))
    assert vocabulary.size == len(vocabulary.symbols) + 2
    ids = vocabulary.ids("Set BLUE!")  # normalized: lower case, punctuation gone
    assert ids == [vocabulary.symbols.index(c) + 2 for c in "set blue"]
    assert vocabulary.ids("x") == [UNKNOWN] and vocabulary.ids("") == [UNKNOWN]
    batch = vocabulary.batch(["set", "lay red"])
    assert batch.shape == (2, 7) and batch.dtype == torch.long and (batch[0, 3:] == PAD).all()
    spoken = phonemes("bin blue at seven now")
    assert len(spoken) > 10 and spoken.count(" ") == 4  # espeak-ng's IPA, five words
    assert "s" in spoken and "n" in spoken


def test_tokens_spread_evenly_over_each_clips_real_frames():
    index = stretch_indices(torch.tensor([3, 2]), torch.tensor([6, 3]), 6)
    assert index.tolist() == [[0, 0, 1, 1, 2, 2], [0, 0, 1, 0, 0, 0]]  # past a clip's end: 0, masked later


def _latent_set(frames: list[int], captions: list[str]) -> LatentSet:
    generator = torch.Generator().manual_seed(0)
    means = [torch.randn((4, n), generator=generator) for n in frames]
    return LatentSet(Path("latents"), {"latent_dim": 4}, means, [0.1 * torch.ones_like(m) for m in means], captions,
                     [None] * len(frames), ["train"] * len(frames), [f"{i}.wav" for i in range(len(frames))])


def test_the_duration_rule_is_fitted_on_the_training_clips():
    from targetkl.gen.train import gen_config

    captions = ["a", "ab", "abc abc", "abcd abcd abc"]  # 1, 2, 7, 13 characters
    latents = _latent_set([10 + 2 * len(c) for c in captions], captions)
    conditioning = SpeechConditioning.training(gen_config(assignments=["task=tts", "tokens=chars"]), latents,
                                               [0, 1, 2, 3])
    assert conditioning.duration["intercept"] == pytest.approx(10.0)
    assert conditioning.duration["per_token"] == pytest.approx(2.0)
    assert conditioning.frames_for("abcab") == 20
    batch = conditioning.batch([0, 3], np.random.default_rng(0), sample_posterior=False)
    assert batch.latents.shape == (2, 4, 36) and batch.mask.sum(dim=1).tolist() == [12, 36]
    assert torch.equal(batch.latents[0, :, :12], latents.means[0]) and (batch.latents[0, :, 12:] == 0).all()
    prompts = conditioning.prompts(["ab", "abcab"])
    assert prompts.lengths == [14, 20] and prompts.frames == 20 and prompts.mask.sum().item() == 34


def test_a_clip_in_a_padded_batch_gets_what_it_gets_alone():
    torch.manual_seed(0)
    model = LatentDiT(4, 0, width=16, depth=2, heads=2, vocabulary=9).eval()
    for parameter in model.parameters():  # zero-initialized output layers would hide any difference
        torch.nn.init.normal_(parameter, std=0.2)
    short, long = torch.randn(1, 4, 5), torch.randn(1, 4, 9)
    tokens = torch.tensor([[2, 3, 4, 0], [5, 6, 7, 8]])
    t = torch.tensor([0.3, 0.7])
    batch = torch.cat([torch.nn.functional.pad(short, (0, 4), value=7.0), long])  # garbage past the short clip
    mask = torch.arange(9)[None] < torch.tensor([[5], [9]])
    together = model(batch, t, tokens, mask=mask)
    alone = model(short, t[:1], tokens[:1, :3])
    assert torch.allclose(together[:1, :, :5], alone, atol=1e-5)
    assert torch.allclose(together[1:], model(long, t[1:], tokens[1:]), atol=1e-5)
    dropped = model(batch, t, tokens, drop=torch.tensor([True, True]), mask=mask)
    assert torch.allclose(dropped[1:], model(long, t[1:], torch.tensor([[2, 0, 0, 0]]), drop=torch.tensor([True])),
                          atol=1e-5)  # dropped text: the same null, whatever the tokens


@pytest.fixture(scope="module")
def speech_sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("tts")
    corpus, sweep = root / "sp", root / "sweep"
    assert main(["corpus", str(corpus), "--kind", "speech", "--clips", "40", "-q"]) == 0
    assert main(["sweep", "--data", str(corpus), "--out", str(sweep), "--kbps", "4", "--baselines", "",
                 "--set", "train.steps=30", "--fast", "-q"]) == 0
    return corpus, sweep


def test_select_tts_scores_speech_between_its_floor_and_its_ceiling(speech_sweep, monkeypatch, capsys):
    import targetkl.gen.tts_select as tts_select

    corpus, sweep = speech_sweep
    settings = ["--set", "gen.width=32", "--set", "gen.depth=2", "--set", "gen.tokens=chars", "--steps", "3"]
    assert main(["select", "--sweep", str(sweep), "--task", "tts", "--sample-steps", "2", *settings, "-q"]) == 0
    assert "most intelligible" in capsys.readouterr().out
    assert json.loads((sweep / "generation-tts.json").read_text())["indistinguishable_from_best"] == []  # one VAE
    result = json.loads((sweep / "generation-tts.json").read_text())
    assert result["task"] == "tts" and "grammar.jsgf" in result["recognizer"]
    (row,) = result["rows"]
    assert row["clips"] >= 2 and row["generated_clips"] == row["clips"]
    assert row["wer_original"] < 0.3  # the recognizer understands the recordings
    assert row["wer_random_latents"] > 0.7  # noise decoded by the VAE: (nearly) every word wrong
    for key in ("wer", "cer", "wer_reconstructions", "wer_random_latents"):
        assert row[f"{key}_lo"] <= row[key] <= row[f"{key}_hi"], key
    assert row["duration_rule"]["per_token"] > 0
    header = (sweep / "generation-tts.csv").read_text().splitlines()[0].split(",")
    assert {"wer", "wer_lo", "wer_hi", "wer_reconstructions", "wer_random_latents", "smoothness_slope"} <= set(header)
    page = (sweep / "report.html").read_text()
    assert "Text-to-speech" in page and "tts-4kbps/clip0.wav" in page and "generation-tts.png" in page

    # A perfect generator (it returns the VAE's own latents of each sentence) scores the reconstructions' WER.
    latents_dir = sweep / "generation" / "4kbps" / "latents"
    manifest = [json.loads(line) for line in (latents_dir / "manifest.jsonl").read_text().splitlines()]
    from targetkl.gen.dataset import load_latent_set

    means = load_latent_set(latents_dir).means
    by_text = {entry["caption"]: means[entry["index"]] for entry in manifest if entry["split"] == "held_out"}

    def perfect(generator, decoder, transcripts, sample_steps, cfg, seed):
        return tts_select.decode_latents(decoder, [by_text[text] for text in transcripts])

    monkeypatch.setattr(tts_select, "generate_speech", perfect)
    perfect_row = tts_select.run_tts_select(sweep, config=_config(), sample_steps=3, progress=False)["rows"][0]
    assert perfect_row["wer"] == pytest.approx(perfect_row["wer_reconstructions"])
    assert perfect_row["cer"] == pytest.approx(perfect_row["cer_reconstructions"])


def _config():
    from targetkl.gen.train import gen_config

    return gen_config(assignments=["width=32", "depth=2", "tokens=chars"], steps=3, task="tts")


def test_generate_speaks_a_tts_generator_for_as_long_as_its_duration_rule_says(speech_sweep, tmp_path, capsys):
    from targetkl.gen.train import load_generator

    _, sweep = speech_sweep
    generator = sweep / "generation" / "4kbps" / "tts"
    if not generator.is_dir():  # run alone: train one the way select does
        assert main(["gen-train", "--latents", str(sweep / "generation" / "4kbps" / "latents"), "--out",
                     str(generator), "--task", "tts", "--set", "gen.tokens=chars", "--set", "width=32", "--set",
                     "depth=2", "--steps", "3", "-q"]) == 0
    text = "set blue at seven now"
    out = tmp_path / "speech.wav"
    assert main(["generate", str(generator), text, str(out), "--steps", "2"]) == 0
    loaded = load_generator(generator)
    frames = loaded.conditioning.frames_for(text)
    info = sf.info(str(out))
    hop = int(loaded.description["latents_info"]["hop"])
    assert info.frames == frames * hop and 60 < frames < 200  # about 2 s of speech at 50 Hz
    assert main(["generate", str(generator), text, str(tmp_path / "one.wav"), "--steps", "1", "--seconds", "1"]) == 0
    assert sf.info(str(tmp_path / "one.wav")).frames == 50 * hop
    capsys.readouterr()
    assert main(["gen-train", "--latents", str(sweep / "generation" / "4kbps" / "latents"), "--out",
                 str(tmp_path / "g"), "--task", "tts", "--set", "gen.tokens=words", "-q"]) == 2
    assert "gen.tokens='words': unknown" in capsys.readouterr().err


def test_the_best_bitrate_is_not_called_better_than_one_whose_interval_overlaps():
    from targetkl.gen.tts_select import best_speech_row, indistinguishable

    rows = [{"label": "1kbps", "wer": 0.38, "wer_lo": 0.31, "wer_hi": 0.44, "cer": 0.28},
            {"label": "4kbps", "wer": 0.42, "wer_lo": 0.35, "wer_hi": 0.49, "cer": 0.30},
            {"label": "8kbps", "wer": 0.70, "wer_lo": 0.60, "wer_hi": 0.80, "cer": 0.50},
            {"label": "2kbps", "wer": 0.38, "wer_lo": 0.30, "wer_hi": 0.45, "cer": 0.20}]
    best = best_speech_row(rows)
    assert best["label"] == "2kbps"  # equal WER: the lower CER
    assert indistinguishable(best, rows) == ["1kbps", "4kbps"]
