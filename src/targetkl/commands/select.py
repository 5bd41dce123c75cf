"""``targetkl select``: a generator trained on each VAE of a sweep, and the bitrate it generates best from."""

from __future__ import annotations

import argparse

from targetkl.commands.common import add_gen_arguments, finite_float, gen_config, positive_int, progress_wanted

NAME = "select"
HELP = "train a generator on each VAE of a sweep and pick the best bitrate"
DESCRIPTION = ("For every target-KL VAE of SWEEP: pre-encode, train the same generator with the same budget, score "
               "text match and Frechet distance against a judge trained on the corpus (and against random latents); "
               "with --task tts (a speech sweep: captions are transcripts) train a text-to-speech generator and score "
               "the WER/CER of its speech by pocketsphinx against the VAE's reconstructions and random latents. "
               "Writes generation.json/csv/png (tts: generation-tts.json/csv/png) and a report.html section; names "
               "the best bitrate.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from targetkl.gen.evaluate import EMBEDDERS

    parser.add_argument("--sweep", required=True, help="sweep folder (from `targetkl sweep`)")
    parser.add_argument("--data", default=None, help="the audio (default: the one the sweep used)")
    parser.add_argument("--task", default="sound", choices=["sound", "tts"],
                        help="sound: text-to-sound scored by the corpus judge (default); tts: text-to-speech scored by "
                             "speech recognition")
    parser.add_argument("--repeats", type=positive_int, default=None,
                        help="generations per held-out caption (default: 3; tts: 1)")
    parser.add_argument("--sample-steps", type=positive_int, default=32, help="Euler sampling steps (default: 32)")
    parser.add_argument("--cfg", type=finite_float, default=None, help="guidance scale (default: 3; tts: 2)")
    parser.add_argument("--embedding", default="judge",
                        help=f"audio embedding of the Frechet distance: {', '.join(EMBEDDERS)} (judge: the "
                             "corpus-trained classifier, default), or a name registered with "
                             "targetkl.gen.evaluate.register_audio_embedder")
    add_gen_arguments(parser, batch=True)


def run(args: argparse.Namespace) -> int:
    if args.task == "tts":
        return run_speech(args)
    from targetkl.gen.select import run_select

    result = run_select(args.sweep, args.data, gen_config(args), repeats=args.repeats or 3,
                        sample_steps=args.sample_steps, cfg=3.0 if args.cfg is None else args.cfg, seed=args.seed or 0,
                        embedding=args.embedding, progress=progress_wanted(args), device=args.device,
                        batch_size=args.batch_size)
    print(f"{'point':<10} {'kbps':>7} {'mel':>6} {'match':>6} {'random':>7} {'recon':>6} {'FD':>8} {'KAD':>8} "
          f"{'val':>6}")
    for row in result["rows"]:
        print(f"{row['label']:<10} {row['rate_kbps']:>7.3f} {row['mel_distance']:>6.3f} {row['text_match']:>6.3f} "
              f"{row['text_match_random_latents']:>7.3f} {row['text_match_reconstructions']:>6.3f} "
              f"{row['frechet_distance']:>8.3f} {row['kad']:>8.3f} {row['val_loss']:>6.3f}")
    print(f"best bitrate: {result['best_kbps']:.3f} kbps ({result['best_label']}); wrote generation.json, "
          f"generation.csv, generation.png and a section of report.html in {args.sweep}")
    return 0


def run_speech(args: argparse.Namespace) -> int:
    from targetkl.gen.tts_select import run_tts_select

    result = run_tts_select(args.sweep, args.data, gen_config(args, task="tts"), repeats=args.repeats or 1,
                            sample_steps=args.sample_steps, cfg=2.0 if args.cfg is None else args.cfg,
                            seed=args.seed or 0, progress=progress_wanted(args), device=args.device,
                            batch_size=args.batch_size)
    print(f"{'point':<10} {'kbps':>7} {'mel':>6} {'WER':>6} {'95% interval':>14} {'recon':>6} {'random':>7} "
          f"{'CER':>6} {'val':>6}")
    for row in result["rows"]:
        print(f"{row['label']:<10} {row['rate_kbps']:>7.3f} {row['mel_distance']:>6.3f} {row['wer']:>6.3f} "
              f"{'[' + format(row['wer_lo'], '.2f') + ', ' + format(row['wer_hi'], '.2f') + ']':>14} "
              f"{row['wer_reconstructions']:>6.3f} {row['wer_random_latents']:>7.3f} {row['cer']:>6.3f} "
              f"{row['val_loss']:>6.3f}")
    print(f"recognizer's own WER on the held-out recordings: {result['rows'][0]['wer_original']:.3f}")
    tied = result["indistinguishable_from_best"]
    caveat = f" (its WER interval overlaps those of {', '.join(tied)}: not significantly better)" if tied else ""
    print(f"most intelligible: {result['best_kbps']:.3f} kbps ({result['best_label']}){caveat}; wrote "
          f"generation-tts.json, generation-tts.csv, generation-tts.png and a section of report.html in {args.sweep}")
    return 0
