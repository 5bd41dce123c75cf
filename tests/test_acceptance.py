"""Acceptance on the real demo corpus with the tiny preset and its default step count.

One rate-distortion sweep (`targetkl sweep`) trains the target-KL VAEs at 0.1, 0.5 and 2 kbps
with the RVQ and fixed-beta baselines and codes the same held-out clips with Opus; the core checks of
training, rate control and the .tkl bitstream read the same runs.
About 36 minutes on two CPU cores (one fixed beta, 1e-1, which lands near 0.2 kbps; 50 with the select below).

The rates are where the tiny model at 1000 steps is rate-limited: its held-out mel distance falls
from 0.1 to 0.5 to 2 kbps and is flat above (docs/low-rates.md), so the curve is checked
where more bits can show.

`targetkl select` trains the tiny generator on each of the three VAEs (about 13 minutes more).
"""

import json

import pytest
import soundfile as sf
import torch

from targetkl.config import resolve
from targetkl.eval.evaluate import evaluate_model
from targetkl.models.codec import build_codec

pytestmark = pytest.mark.slow

TARGETS = (0.1, 0.5, 2.0)
CLIP_SECONDS = 1.0  # the demo corpus's clip length
FLUSH_BITS = 32  # the range coder closes each .tkl payload with at most one more 32-bit word


@pytest.fixture(scope="module")
def sweep(demo_corpus, tmp_path_factory):
    from targetkl.eval.sweep import run_sweep

    out = tmp_path_factory.mktemp("acceptance-sweep")
    rows, _ = run_sweep(demo_corpus, out, list(TARGETS), ["rvq", "beta", "opus"], betas=(1e-1,),
                        perceptual=True, progress=False)
    print(json.dumps([{k: r.get(k) for k in ("system", "label", "rate_kbps", "mel_distance", "si_sdr", "pesq",
                                             "visqol")} for r in rows], indent=1))
    return out, rows


@pytest.fixture(scope="module")
def vae(sweep):
    return {row["target_kbps"]: row for row in sweep[1] if row["system"] == "vae"}


def test_two_kbps_lands_within_five_percent_and_reconstructs(vae, demo_corpus):
    result = vae[2.0]
    assert abs(result["rate_kbps"] - 2.0) / 2.0 < 0.05, result
    config = resolve("tiny", flags={"rate.target_kbps": 2.0})
    torch.manual_seed(config.train.seed)
    untrained = evaluate_model(build_codec(config).eval(), config, demo_corpus, perceptual=False, progress=False)
    print(f"2 kbps: measured {result['rate_kbps']:.4f} kbps, mel {result['mel_distance']:.3f} "
          f"vs untrained {untrained['mel_distance']:.3f}")
    assert result["mel_distance"] < 0.5 * untrained["mel_distance"]


def test_every_vae_decodes_what_its_latent_carries(vae):
    """A decoder that ignores its latent spends the target rate for nothing, and the rate checks cannot
    see it: latent_use (measured 0.63 / 0.74 / 0.86 at 0.1 / 0.5 / 2 kbps; 0.06 for a seed-1 run that
    gave up its latent before the noise ramp) must be clear of the warning threshold."""
    from targetkl.eval.measure import LATENT_UNUSED_BELOW

    for target in TARGETS:
        assert vae[target]["latent_use"] > 2 * LATENT_UNUSED_BELOW, (target, vae[target]["latent_use"])


def test_every_target_lands_within_five_percent_in_order(vae):
    measured = [vae[t]["rate_kbps"] for t in TARGETS]
    print("targets", TARGETS, "measured", measured)
    assert measured == sorted(measured)
    for target in TARGETS:
        assert abs(vae[target]["rate_kbps"] - target) / target < 0.05, (target, vae[target]["rate_kbps"])


def test_default_lagrange_control_lands_within_one_percent_on_held_out_audio(vae):
    """The default controller (lagrange, per clip) meets every target on the held-out clips to 1%
    (measured: -0.54% / +0.12% / +0.07% at 0.1 / 0.5 / 2 kbps with the noise ramp and tiny's LR decaying
    to zero; before them one machine gave +5.8% at 0.1 kbps and another lost that latent)."""
    for target in TARGETS:
        assert abs(vae[target]["rate_kbps"] - target) / target < 0.01, (target, vae[target]["rate_kbps"])


def test_sweep_report_is_complete_and_every_baseline_is_accounted(sweep, vae):
    out, rows = sweep
    print("VAE mel distance by rate", {t: vae[t]["mel_distance"] for t in sorted(vae)})
    for name in ("rd.csv", "rd.json", "rd.png", "report.html"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0
    systems = {row["system"] for row in rows}
    assert systems == {"vae", "tkl", "rvq", "beta", "opus"}
    for row in rows:
        assert all(row.get(k) is not None for k in ("mel_distance", "stft_distance", "si_sdr", "pesq", "stoi",
                                                     "visqol")), row
    rvq = {row["target_kbps"]: row["rate_kbps"] for row in rows if row["system"] == "rvq"}
    assert rvq == pytest.approx({t: t for t in TARGETS})
    for row in rows:
        if row["system"] == "vae":
            assert abs(row["rate_kbps"] - row["target_kbps"]) / row["target_kbps"] < 0.05, row
        if row["system"] == "tkl":
            allowance = 0.10 * row["target_kbps"] + FLUSH_BITS / CLIP_SECONDS / 1000
            assert abs(row["rate_kbps"] - vae[row["target_kbps"]]["rate_kbps"]) < allowance, row


def test_tkl_files_are_the_size_the_kl_promised(sweep, vae, demo_corpus, tmp_path):
    """Compress every held-out clip with each run. Its KL matches the held-out rate, and the payload
    is within 10% of the KL plus the one 32-bit word that closes each file (worth 0.032 kbps on a 1 s
    clip: +32% at 0.1 kbps, which is why the 10% itself is checked on all held-out clips joined into one
    file). Quantizing costs little from 0.5 kbps up: the decompressed audio's mel distance to the input is
    within 25% of the plain decode's. At 0.1 kbps (2 bits per frame) it costs more, and the bound says how
    much: 1.252 against 0.867 measured (+44%), held below +60%."""
    import numpy as np

    from targetkl.bitstream import compress_file
    from targetkl.data import load_folder
    from targetkl.runs import load_run

    held_out = load_folder(demo_corpus, 16000, "held_out", progress=False).clips
    joined = tmp_path / "held_out_joined.wav"
    sf.write(joined, np.concatenate([clip.audio for clip in held_out]), 16000, subtype="FLOAT")
    for target in TARGETS:
        run = load_run(vae[target]["run"])
        loudness = run.config.data.loudness_dbfs
        reports = [compress_file(run.model, demo_corpus / clip.path, tmp_path / "clip.tkl", loudness).report
                   for clip in held_out]
        kl_bits = sum(r["kl_kbps"] for r in reports) / len(reports) * 1000 * CLIP_SECONDS
        payload_bits = sum(r["payload_kbps"] for r in reports) / len(reports) * 1000 * CLIP_SECONDS
        whole = compress_file(run.model, joined, tmp_path / "joined.tkl", loudness).report
        print(f"{target} kbps: per 1 s clip KL {kl_bits:.1f} bits, payload {payload_bits:.1f} bits; "
              f"one {whole['seconds']:.0f} s file: KL {whole['kl_kbps']:.4f}, payload {whole['payload_kbps']:.4f} kbps")
        assert abs(kl_bits / 1000 / CLIP_SECONDS - vae[target]["rate_kbps"]) / vae[target]["rate_kbps"] < 0.01
        assert 0.9 * kl_bits < payload_bits < 1.1 * kl_bits + FLUSH_BITS
        assert abs(whole["payload_kbps"] - whole["kl_kbps"]) / whole["kl_kbps"] < 0.10
    tkl = {row["target_kbps"]: row for row in sweep[1] if row["system"] == "tkl"}
    for target in TARGETS:
        print(f"{target} kbps: mel to the input, plain decode {vae[target]['mel_distance']:.3f}, "
              f".tkl {tkl[target]['mel_distance']:.3f}")
        allowed = 1.6 if target < 0.5 else 1.25
        assert tkl[target]["mel_distance"] < allowed * vae[target]["mel_distance"]


def test_the_vae_curve_falls_with_rate(vae):
    """More bits, less distortion. Each step up in rate lowers the held-out mel distance by more
    than 1% (measured: 0.793 / 0.715 / 0.692, steps of 9.8% and 3.2%; before the noise ramp 0.867 /
    0.680 / 0.643 on one machine)."""
    mel = [vae[target]["mel_distance"] for target in TARGETS]
    print("VAE mel distance at", TARGETS, "kbps:", [round(m, 4) for m in mel])
    for lower_rate, higher_rate in zip(mel, mel[1:]):
        assert higher_rate < 0.99 * lower_rate, mel


@pytest.fixture(scope="module")
def selection(sweep):
    from targetkl.gen.select import run_select

    result = run_select(sweep[0], progress=False)
    print(json.dumps([{k: r.get(k) for k in ("label", "rate_kbps", "text_match", "text_match_random_latents",
                                             "text_match_reconstructions", "frechet_distance",
                                             "frechet_distance_random_latents", "val_loss")} for r in result["rows"]],
                     indent=1))
    return result


def test_select_names_a_bitrate_whose_generations_beat_random_latents(sweep, selection):
    """Select over the sweep's three VAEs; the chosen VAE's generated audio is recognized as the
    prompt's class far more often than random latents decoded by the same VAE (chance is 1/7).

    The judge (a small CNN trained here) bounds what text match can show: the VAE's own reconstructions
    of the held-out clips are the ceiling. So the check is relative to it: generations recover at least
    half of the ceiling's lead over random latents, and at least twice the random latents' match.
    Measured at 0.5 kbps, the bitrate named both times: 0.65 vs random 0.15, ceiling 0.72 (one run); 0.41
    vs 0.15, ceiling 0.39 (a clean-clone CI run whose judge recognized fewer reconstructions)."""
    from conftest import chromium_dom

    out = sweep[0]
    saved = json.loads((out / "generation.json").read_text())
    assert [round(r["target_kbps"], 3) for r in saved["rows"]] == list(TARGETS)
    best = [r for r in saved["rows"] if r["rate_kbps"] == saved["best_kbps"]]
    assert len(best) == 1
    best = best[0]
    print(f"best {saved['best_kbps']:.3f} kbps: text match {best['text_match']:.3f}, random latents "
          f"{best['text_match_random_latents']:.3f}; judge held-out accuracy {saved['judge']['held_out_accuracy']:.3f}")
    assert saved["judge"]["held_out_accuracy"] > 0.8
    floor, ceiling = best["text_match_random_latents"], best["text_match_reconstructions"]
    assert ceiling >= floor + 0.2, "the judge must tell the VAE's reconstructions from random latents"
    assert best["text_match"] >= floor + 0.5 * (ceiling - floor)
    assert best["text_match"] >= 2 * floor
    assert best["frechet_distance"] < best["frechet_distance_random_latents"]
    for name in ("generation.csv", "generation.png"):
        assert (out / name).stat().st_size > 0
    dom = chromium_dom(out / "report.html")
    assert 'data-plot="loaded"' in dom and 'data-plots="3"' in dom  # rd.png, geometry.png, generation.png
    for row in saved["rows"]:  # each VAE's latent geometry beside its generation scores (generation.csv too)
        assert row["smoothness_slope"] > 0 and 1 / 8 <= row["interp_max_jump"] <= 1, row["label"]
        assert 1 <= row["latent_effective_dim"] <= 16 and 0 <= row["active_channels"] <= 16, row["label"]
    for row in saved["rows"]:
        assert len(row["audio"]) == len(row["prompts"]) >= 3
        assert all(sf.read(path)[0].shape == (16000,) for path in row["audio"])
