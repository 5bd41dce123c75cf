"""``targetkl corpus``: synthesize a captioned corpus (sounds or speech) without downloads."""

from __future__ import annotations

import argparse

from targetkl.commands.common import add_quiet_argument, finite_float, progress_wanted

NAME = "corpus"
HELP = "synthesize the captioned demo corpus (no downloads)"
DESCRIPTION = ("Write OUT/clips/*.wav (plucked strings, bells, chords, chirps, noise bursts, drums, sung vowels; "
               "--snr-db adds a recording noise floor), OUT/captions.jsonl with one truthful caption per clip and "
               "OUT/corpus.json with the settings. Seeded: the same arguments give the same files.")
KINDS = ("sounds", "speech")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", help="output folder")
    parser.add_argument("--kind", choices=KINDS, default="sounds",
                        help="sounds: the synthesized demo sounds (default); speech: sentences of a small grammar "
                             "spoken by espeak-ng in several voices, the caption being the text (eval and sweep "
                             "then report wer and cer); --seconds and --snr-db apply to sounds only")
    parser.add_argument("--clips", type=int, default=300, help="number of clips (default: 300)")
    parser.add_argument("--seconds", type=finite_float, default=1.0, help="clip length in seconds (default: 1.0)")
    parser.add_argument("--sample-rate", type=int, default=16000, help="sample rate in Hz (default: 16000)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--snr-db", type=float, default=float("inf"),
                        help="lay each clip over white noise this many dB below its RMS (default: inf, none)")
    parser.add_argument("--channels", type=int, default=1,
                        help="1 (default) or 2: each clip panned to its own place between left and right "
                             "(train on it with --set model.audio_channels=2)")
    add_quiet_argument(parser)


def run(args: argparse.Namespace) -> int:
    if args.kind == "speech":
        from targetkl.data.speech import write_speech_corpus

        if args.channels != 1:
            from targetkl.config import ConfigError

            raise ConfigError(f"--channels {args.channels}: the speech corpus is mono; leave --channels out")
        out = write_speech_corpus(args.out, clips=args.clips, sample_rate=args.sample_rate, seed=args.seed,
                                  progress=progress_wanted(args))
        print(f"wrote {args.clips} spoken clips, captions.jsonl (the spoken text) and grammar.jsgf to {out}")
        return 0
    from targetkl.data.corpus import write_corpus

    out = write_corpus(args.out, clips=args.clips, seconds=args.seconds, sample_rate=args.sample_rate,
                       seed=args.seed, progress=progress_wanted(args), snr_db=args.snr_db, channels=args.channels)
    print(f"wrote {args.clips} clips and captions.jsonl to {out}")
    return 0
