"""``targetkl compress``: an audio file to an entropy-coded ``.tkl`` bitstream."""

from __future__ import annotations

import argparse

from targetkl.commands.common import add_file_arguments, load_run_for, write_json

NAME = "compress"
HELP = "audio file to a .tkl bitstream (entropy-coded VAE latent)"
DESCRIPTION = ("Quantize RUN's posterior mean with a per-channel step tied to the posterior std and range-code it "
               "under the N(0, 1) prior, into a .tkl file whose size matches the KL rate. Writes output; prints the "
               "KL, payload and file rates in kbps.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_file_arguments(parser, "audio file", ".tkl file to write")
    parser.add_argument("--json", help="also write the report (kl_kbps, payload_kbps, file_kbps, distortion) here")


def run(args: argparse.Namespace) -> int:
    from targetkl.eval.compressed import compress_and_measure

    run_folder = load_run_for(args)
    report = compress_and_measure(run_folder.model, args.input, args.output, run_folder.config.data.loudness_dbfs,
                                  args.batch_size)
    print(f"wrote {args.output}: {report['file_bytes']} bytes for {report['seconds']:.2f} s; KL rate "
          f"{report['kl_kbps']:.3f} kbps, payload {report['payload_kbps']:.3f} kbps, "
          f"file {report['file_kbps']:.3f} kbps; mel distance {report['mel_distance']:.4f} "
          f"(plain decode of the mean: {report['mel_distance_mean_decode']:.4f})")
    if args.json:
        write_json(args.json, report)
    return 0
