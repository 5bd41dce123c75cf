"""``targetkl train``: train a codec at a target bitrate, or resume its run."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from targetkl import rate
from targetkl.commands.common import DATA_HELP, add_config_arguments, add_quiet_argument, positive_int, progress_wanted

log = logging.getLogger("targetkl")

NAME = "train"
HELP = "train a codec at a target bitrate (resumes if RUN has a checkpoint)"
DESCRIPTION = ("Train a codec (a registered architecture) with a Gaussian (vae), residual-VQ (rvq) or no (ae) "
               "bottleneck. For vae, --target-kbps B sets KL_target = B*ln2/frame_rate nats per frame. Writes "
               "RUN/config.json, RUN/metrics.jsonl, RUN/checkpoints (atomic), RUN/latent_stats.json and TensorBoard "
               "logs in RUN/tensorboard (scalars, held-out audio and spectrograms: tensorboard --logdir RUN); "
               "running it again on RUN resumes exactly.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from targetkl.bottlenecks.factory import BOTTLENECKS
    from targetkl.control import CONTROLLERS

    parser.add_argument("--data", required=True, help=DATA_HELP)
    parser.add_argument("--out", required=True, help="run folder")
    add_config_arguments(parser)
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--target-kbps", type=float, default=None, help="target bitrate in kbps (vae)")
    target.add_argument("--target-nats", type=float, default=None,
                        help="target KL in nats per latent frame (vae), converted at the model's frame rate")
    parser.add_argument("--kl-lambda", type=float, default=None,
                        help="the paper's squared loss lambda*(KL - KL_target)^2 with lambda per nat squared "
                             "(e.g. 1, 2 or 10); implies --kl-control target")
    parser.add_argument("--bottleneck", default=None, metavar="NAME",
                        help=f"a registered bottleneck: {', '.join(BOTTLENECKS)} (default: the preset's; more with "
                             "targetkl.bottlenecks.factory.register_bottleneck)")
    parser.add_argument("--kl-control", default=None, metavar="NAME",
                        help=f"a registered rate controller for vae: {', '.join(CONTROLLERS)} (default: the "
                             "preset's, lagrange: the target-KL loss plus a multiplier that removes its offset; more "
                             "with targetkl.control.register_controller)")
    parser.add_argument("--steps", type=int, default=None, help="total optimizer steps")
    parser.add_argument("--seed", type=int, default=None, help="random seed")
    parser.add_argument("--batch-size", type=positive_int, default=None, help="clips per batch")
    parser.add_argument("--device", default=None, help="auto (default), cpu or cuda")
    add_quiet_argument(parser)


def training_config(args: argparse.Namespace):
    """The preset (or, when resuming without ``--preset``, the run's saved config), then ``--config`` files,
    ``--set``, then the explicit flags; see :func:`targetkl.config.resolve`."""
    from targetkl import config as cfg

    flags = {
        "rate.target_kbps": args.target_kbps,
        "model.bottleneck": args.bottleneck,
        "rate.controller": args.kl_control,
        "train.steps": args.steps,
        "train.seed": args.seed,
        "train.batch_size": args.batch_size,
        "train.device": args.device,
        "rate.target.kl_lambda": args.kl_lambda,
    }
    if args.kl_lambda is not None and args.kl_control is None:
        flags["rate.controller"] = "target"
    saved = Path(args.out) / "config.json"
    base = cfg.load_run_config(args.out) if saved.is_file() and args.preset is None else None
    return cfg.resolve(args.preset or "tiny", args.config, args.set, flags, target_nats=args.target_nats, base=base)


def run(args: argparse.Namespace) -> int:
    from targetkl.bottlenecks.factory import bottleneck_kind
    from targetkl.train.distributed import init_from_environment
    from targetkl.train.trainer import Trainer

    config = training_config(args)
    context = init_from_environment()
    targeted = bottleneck_kind(config.model.bottleneck).targets_rate(config)
    target = f"{config.rate.target_kbps:g} kbps" if targeted else config.model.bottleneck
    if context.is_main:
        log.info("training %s: preset %s, %s, %d steps, frame rate %g Hz%s", args.out, config.preset, target,
                 config.train.steps, config.model.frame_rate,
                 f", {context.world_size} processes" if context.active else "")
        log.info("TensorBoard: tensorboard --logdir %s", Path(args.out) / "tensorboard")
    result = Trainer(config, args.data, args.out, progress=progress_wanted(args), distributed=context).run()
    if not context.is_main:
        return 130 if result.interrupted else 0
    if result.interrupted:
        print(f"interrupted at step {result.step}; checkpoint saved in {args.out}. Run the same command to resume.")
        return 130
    print(f"trained {args.out} to step {result.step}; TensorBoard (scalars, held-out audio, spectrograms): "
          f"tensorboard --logdir {Path(args.out) / 'tensorboard'}")
    held_out = result.held_out
    if held_out.get("rate_kbps") is not None:
        target = held_out.get("target_kbps")
        against = f" (target {target:g} kbps, {rate.rate_error_percent(held_out['rate_kbps'], target):+.2f}%)" \
            if target else ""
        mark = " OFF TARGET" if rate.off_target(held_out["rate_kbps"], target) else ""
        print(f"held-out rate {held_out['rate_kbps']:.4f} kbps{against}{mark}, {held_out['clips']} clips; "
              f"`targetkl eval {args.out} --data {args.data}` for every metric")
    elif result.last_metrics.get("rate/kbps") is not None:
        print(f"last batch rate {result.last_metrics['rate/kbps']:.4f} kbps "
              f"(target {config.rate.target_kbps}); run `targetkl eval {args.out} --data {args.data}` "
              "for the held-out rate")
    return 0
