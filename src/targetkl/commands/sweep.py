"""``targetkl sweep``: a rate-distortion sweep of target-KL VAEs against the baselines."""

from __future__ import annotations

import argparse
import math

from targetkl.commands.common import (DATA_HELP, add_config_arguments, add_device_argument, add_quiet_argument,
                                      float_list, names, progress_wanted)

NAME = "sweep"
HELP = "rate-distortion sweep: target-KL VAEs vs RVQ, fixed beta, AE and classic codecs"
DESCRIPTION = ("Train (or reuse) one target-KL VAE per bitrate and the chosen baselines, evaluate all of them on the "
               "same held-out clips, and write SWEEP/rd.csv, rd.json, rd.png and report.html. An interrupted sweep "
               "continues where it stopped; finished runs are never retrained.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from targetkl.eval.sweep import BASELINES
    from targetkl.models.architectures import architecture_names

    parser.add_argument("--data", required=True, help=DATA_HELP)
    parser.add_argument("--out", required=True, help="sweep folder")
    parser.add_argument("--kbps", default="0.5,1,2,4,8", help="target bitrates in kbps (default: 0.5,1,2,4,8)")
    parser.add_argument("--nats", default=None,
                        help="targets in nats per latent frame instead, e.g. 80,160,320,640,1280 (converted at the "
                             "preset's frame rate)")
    parser.add_argument("--baselines", default=",".join(BASELINES),
                        help=f"any of {', '.join(BASELINES)}: rvq (matched bitrates), beta (fixed KL weights), ae "
                             "(plain autoencoders) and classic codecs (default: all)")
    parser.add_argument("--betas", default="1e-4,1e-3,1e-2,1e-1", help="KL weights of the beta baseline")
    parser.add_argument("--ae-widths", default="2,4,8", help="latent widths of the autoencoder baseline")
    parser.add_argument("--architectures", default=None,
                        help="codec architectures with a target-KL line each, any of "
                             f"{', '.join(architecture_names())} (default: the preset's); the others are systems "
                             "vae-<name> at the same bitrates")
    add_config_arguments(parser)
    parser.add_argument("--fast", action="store_true", help="skip PESQ, STOI and ViSQOL")
    add_quiet_argument(parser, "no progress bars")
    add_device_argument(parser)


def sweep_kbps(args: argparse.Namespace) -> list[float]:
    """``--kbps``, or ``--nats`` (per frame) converted at the preset's frame rate."""
    if args.nats is None:
        return float_list(args.kbps, "--kbps")
    from targetkl import config as cfg
    from targetkl import rate

    frame_rate = cfg.resolve(args.preset or "tiny", args.config, args.set).model.frame_rate
    return [rate.nats_per_frame_to_kbps(n, frame_rate) for n in float_list(args.nats, "--nats")]


def run(args: argparse.Namespace) -> int:
    from targetkl.eval.report import rate_rows
    from targetkl.eval.sweep import run_sweep

    rows, sweep = run_sweep(args.data, args.out, sweep_kbps(args), names(args.baselines),
                            preset=args.preset or "tiny", config_files=args.config, assignments=args.set,
                            betas=tuple(float_list(args.betas, "--betas")),
                            ae_widths=tuple(int(w) for w in float_list(args.ae_widths, "--ae-widths")),
                            perceptual=not args.fast, progress=progress_wanted(args), device=args.device,
                            batch_size=args.batch_size,
                            architectures=names(args.architectures) if args.architectures else None)
    print(f"{'system':<8} {'point':<10} {'target':>8} {'measured':>9} {'mel':>7} {'si_sdr':>8}")
    for row in rate_rows(rows):
        target = f"{row['target_kbps']:.3f}" if row.get("target_kbps") else "-"
        mark = f"  off target ({row['rate_error_percent']:+.1f}%)" if row.get("off_target") else ""
        mel, si_sdr = (f"{row[k]:.{d}f}" if isinstance(row.get(k), float) and math.isfinite(row[k]) else "-"
                       for k, d in (("mel_distance", 3), ("si_sdr", 2)))
        print(f"{row['system']:<8} {row['label']:<10} {target:>8} {row['rate_kbps']:>9.3f} {mel:>7} {si_sdr:>8}{mark}")
    print(f"trained {len(sweep.trained)} run(s) now, reused the rest; wrote rd.csv, rd.json, rd.png and "
          f"report.html in {args.out}")
    return 0
