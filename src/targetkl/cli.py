"""``targetkl``: one command line with a subcommand per job. ``targetkl SUBCOMMAND --help`` explains each."""

from __future__ import annotations

import argparse
import json
import math
import logging
import sys
from pathlib import Path

from targetkl import __version__, rate

log = logging.getLogger("targetkl")


def _add_config_arguments(parser: argparse.ArgumentParser) -> None:
    from targetkl.config import PRESETS

    parser.add_argument("--preset", default=None, choices=list(PRESETS),
                        help=f"named configuration: {', '.join(PRESETS)} (default: tiny)")
    parser.add_argument("--config", action="append", default=[], metavar="FILE",
                        help="YAML/TOML/JSON file of overrides, e.g. {train: {steps: 500}}; repeatable")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one value, e.g. --set model.latent_dim=32; repeatable")


def _resolve_training_config(args: argparse.Namespace):
    """Preset (or the run's saved config when resuming), then files, --set, then explicit flags."""
    from targetkl import config as cfg

    flags = {
        "rate.target_kbps": getattr(args, "target_kbps", None),
        "model.bottleneck": getattr(args, "bottleneck", None),
        "rate.controller": getattr(args, "kl_control", None),
        "train.steps": getattr(args, "steps", None),
        "train.seed": getattr(args, "seed", None),
        "train.batch_size": getattr(args, "batch_size", None),
        "train.device": getattr(args, "device", None),
        "rate.target.kl_lambda": getattr(args, "kl_lambda", None),
    }
    if getattr(args, "kl_lambda", None) is not None and getattr(args, "kl_control", None) is None:
        flags["rate.controller"] = "target"
    saved = Path(args.out) / "config.json"
    if saved.is_file() and args.preset is None:
        config = cfg.load_run_config(args.out)
        for file in args.config:
            config = cfg.apply_overrides(config, cfg.load_override_file(file), where=file)
        if args.set:
            config = cfg.apply_overrides(config, cfg.parse_assignments(args.set), where="--set")
        config = cfg.apply_overrides(config, cfg.nest(flags), where="command line")
        config = cfg.with_target_nats(config, getattr(args, "target_nats", None))
        cfg.validate(config)
        return config
    config = cfg.resolve(args.preset or "tiny", args.config, args.set, flags)
    config = cfg.with_target_nats(config, getattr(args, "target_nats", None))
    cfg.validate(config)
    return config


def cmd_corpus(args: argparse.Namespace) -> int:
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


def cmd_index(args: argparse.Namespace) -> int:
    from targetkl.data.index import DataError, ensure_index

    index = ensure_index(args.data, workers=args.workers, progress=progress_wanted(args))
    print(f"indexed {index.summary()}; cache {index.cache_file}")
    for path, reason in list(index.skipped.items())[:20]:
        print(f"  skipped {path}: {reason}")
    if not index.entries:
        raise DataError(f"{args.data}: no usable audio file ({len(index.skipped)} skipped); point --data at a folder, "
                        "manifest or shards that hold audio")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from targetkl.train.distributed import init_from_environment
    from targetkl.train.trainer import Trainer

    config = _resolve_training_config(args)
    context = init_from_environment()
    from targetkl.bottlenecks.factory import bottleneck_kind

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


def cmd_eval(args: argparse.Namespace) -> int:
    from targetkl.eval.evaluate import evaluate_run, format_result, to_json

    result = evaluate_run(args.run, args.data, perceptual=not args.fast, progress=progress_wanted(args),
                          device=args.device, batch_size=args.batch_size)
    print(format_result(result))
    if args.json:
        from targetkl.fileio import output_path, write_text_atomic

        write_text_atomic(output_path(args.json), to_json(result) + "\n")
    return 0


def cmd_encode(args: argparse.Namespace) -> int:
    from targetkl.latents import encode_file

    info = encode_file(_load_for(args).model, args.input, args.output, batch_size=args.batch_size)
    print(f"wrote {args.output}: {info['frames']} frames at {float(info['frame_rate']):g} Hz")
    return 0


def cmd_decode(args: argparse.Namespace) -> int:
    from targetkl.latents import decode_file

    info = decode_file(_load_for(args).model, args.input, args.output, batch_size=args.batch_size)
    print(f"wrote {args.output}: {info['samples']} samples at {info['sample_rate']} Hz")
    return 0


def cmd_compress(args: argparse.Namespace) -> int:
    from targetkl.eval.compressed import compress_and_measure

    run = _load_for(args)
    report = compress_and_measure(run.model, args.input, args.output, run.config.data.loudness_dbfs, args.batch_size)
    print(f"wrote {args.output}: {report['file_bytes']} bytes for {report['seconds']:.2f} s; KL rate "
          f"{report['kl_kbps']:.3f} kbps, payload {report['payload_kbps']:.3f} kbps, "
          f"file {report['file_kbps']:.3f} kbps; mel distance {report['mel_distance']:.4f} "
          f"(plain decode of the mean: {report['mel_distance_mean_decode']:.4f})")
    if args.json:
        from targetkl.fileio import write_text_atomic

        write_text_atomic(Path(args.json), json.dumps(report, indent=2) + "\n")
    return 0


def cmd_decompress(args: argparse.Namespace) -> int:
    from targetkl.bitstream import decompress_file

    info = decompress_file(_load_for(args).model, args.input, args.output, args.batch_size)
    print(f"wrote {args.output}: {info['samples']} samples at {info['sample_rate']} Hz")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from targetkl.export import export_run

    info = export_run(args.run, args.out, args.data, args.format, args.stats_clips)
    rate_text = f"{info['rate_kbps']:.4f} kbps measured" if info["rate_kbps"] is not None else "no measured rate"
    print(f"wrote {args.out} ({args.format}): {rate_text}, latent statistics over {info['latent_stats']['clips']} "
          f"training clips in {args.out}/targetkl.json")
    return 0


def _load_for(args: argparse.Namespace):
    """The run of a file command on its ``--device``."""
    from targetkl.inference import choose_device
    from targetkl.runs import load_run

    return load_run(args.run, choose_device(args.device))


def cmd_demo(args: argparse.Namespace) -> int:
    from targetkl.demo import run_demo

    kbps = _float_list(args.kbps, "--kbps")
    summary = run_demo(Path(args.out), kbps, steps=args.steps, clips=args.clips, progress=progress_wanted(args))
    print(json.dumps(summary, indent=2))
    return 0


def _names(text: str) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``."""
    return [item.strip() for item in text.split(",") if item.strip()]


def _float_list(text: str, option: str) -> list[float]:
    """``"0.5, 1,2"`` -> ``[0.5, 1.0, 2.0]``; a one-line ``UserError`` for anything else (or nothing)."""
    from targetkl.errors import UserError

    try:
        values = [float(x) for x in _names(text)]
    except ValueError:
        values = []
    if not values or not all(math.isfinite(v) and v > 0 for v in values):
        raise UserError(f"{option} takes comma-separated positive numbers, e.g. 0.5,1,2; got {text!r}")
    return values


def _finite_float(text: str) -> float:
    """An argparse type: a finite number (a guidance scale, a length in seconds)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1 (a batch size, a count of steps)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


def _sweep_kbps(args: argparse.Namespace) -> list[float]:
    """``--kbps``, or ``--nats`` (per frame) converted at the preset's frame rate."""
    if args.nats is None:
        return _float_list(args.kbps, "--kbps")
    from targetkl import config as cfg
    from targetkl import rate

    frame_rate = cfg.resolve(args.preset or "tiny", args.config, args.set).model.frame_rate
    return [rate.nats_per_frame_to_kbps(n, frame_rate) for n in _float_list(args.nats, "--nats")]


def cmd_sweep(args: argparse.Namespace) -> int:
    from targetkl.eval.report import rate_rows
    from targetkl.eval.sweep import run_sweep

    rows, sweep = run_sweep(args.data, args.out, _sweep_kbps(args), _names(args.baselines),
                            preset=args.preset or "tiny", config_files=args.config, assignments=args.set,
                            betas=tuple(_float_list(args.betas, "--betas")),
                            ae_widths=tuple(int(w) for w in _float_list(args.ae_widths, "--ae-widths")),
                            perceptual=not args.fast, progress=progress_wanted(args), device=args.device,
                            batch_size=args.batch_size,
                            architectures=_names(args.architectures) if args.architectures else None)
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


def cmd_controllers(args: argparse.Namespace) -> int:
    from targetkl.eval.controllers import compare_controllers, format_rows

    rows = compare_controllers(args.data, args.out, _float_list(args.kbps, "--kbps"), _names(args.controllers),
                               preset=args.preset or "tiny", config_files=args.config, assignments=args.set,
                               progress=progress_wanted(args), device=args.device, batch_size=args.batch_size)
    print(format_rows(rows))
    print(f"wrote controllers.json, controllers.csv and controllers.png (rate vs step) in {args.out}")
    return 0


def cmd_sanity(args: argparse.Namespace) -> int:
    from targetkl.sanity import SanityConfig, format_table, run_sanity

    config = SanityConfig(steps=args.steps, seed=args.seed)
    rows = run_sanity(_names(args.controllers), _float_list(args.bits, "--bits"), config,
                      progress=progress_wanted(args))
    print(format_table(rows))
    if args.json:
        from targetkl.fileio import write_text_atomic

        write_text_atomic(Path(args.json), json.dumps(rows, indent=2) + "\n")
    return 0


def _gen_config(args: argparse.Namespace):
    from targetkl.gen.train import gen_config

    return gen_config(args.gen_preset, args.set, steps=args.steps, seed=args.seed, device=args.device)


def cmd_pre_encode(args: argparse.Namespace) -> int:
    from targetkl.gen.dataset import pre_encode

    info = pre_encode(args.run, args.data, args.out, progress=progress_wanted(args), device=args.device,
                      batch_size=args.batch_size)
    rate_text = f"; held-out rate {info['rate_kbps']:.4f} kbps" if info.get("rate_kbps") is not None else ""
    print(f"wrote latents of {info['clips']} clips ({info['captioned']} captioned) to {args.out}{rate_text}")
    return 0


def cmd_gen_train(args: argparse.Namespace) -> int:
    from targetkl.gen.train import GenTrainer

    result = GenTrainer(_gen_config(args), args.latents, args.out, progress=progress_wanted(args)).run()
    print(f"trained {args.out} to step {result['step']}; held-out flow-matching loss {result['val_loss']:.4f} "
          f"({result['frames']} latent frames per clip)")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from targetkl.gen.sample import generate_file

    info = generate_file(args.generator, args.prompt, args.output, steps=args.steps, cfg=args.cfg, seed=args.seed,
                         seconds=args.seconds, device=args.device)
    print(f"wrote {args.output}: {info['seconds']:.2f} s at {info['sample_rate']} Hz")
    return 0


def cmd_select(args: argparse.Namespace) -> int:
    from targetkl.gen.select import run_select

    result = run_select(args.sweep, args.data, _gen_config(args), repeats=args.repeats, sample_steps=args.sample_steps,
                        cfg=args.cfg, seed=args.seed or 0, embedding=args.embedding, progress=progress_wanted(args),
                        device=args.device, batch_size=args.batch_size)
    print(f"{'point':<10} {'kbps':>7} {'mel':>6} {'match':>6} {'random':>7} {'recon':>6} {'FD':>8} {'KAD':>8} "
          f"{'val':>6}")
    for row in result["rows"]:
        print(f"{row['label']:<10} {row['rate_kbps']:>7.3f} {row['mel_distance']:>6.3f} {row['text_match']:>6.3f} "
              f"{row['text_match_random_latents']:>7.3f} {row['text_match_reconstructions']:>6.3f} "
              f"{row['frechet_distance']:>8.3f} {row['kad']:>8.3f} {row['val_loss']:>6.3f}")
    print(f"best bitrate: {result['best_kbps']:.3f} kbps ({result['best_label']}); wrote generation.json, "
          f"generation.csv, generation.png and a section of report.html in {args.sweep}")
    return 0


def cmd_listen(args: argparse.Namespace) -> int:
    from targetkl.eval.listen import ListeningTestError, format_results, write_results, write_test

    if args.results:
        if args.sweep or args.clips or args.systems:
            raise ListeningTestError("--results aggregates saved ratings on its own; leave out SWEEP, --clips and "
                                     "--systems")
        results, out = write_results(args.results, args.out)
        print(format_results(results))
        also = f" and {results['sweep']} (report.html)" if results.get("sweep") and \
            (Path(results["sweep"]) / "listening.json").is_file() else ""
        print(f"wrote listening.json and listening.png to {out}{also}")
        return 0
    if not args.sweep:
        raise ListeningTestError("name a sweep folder to write a test for (targetkl listen SWEEP --out TEST), or "
                                 "--results RATINGS... to aggregate saved ratings")
    out = Path(args.out) if args.out else Path(args.sweep) / "listening-test"
    test = write_test(args.sweep, out, clips=args.clips, systems=_names(args.systems) if args.systems else None)
    systems = sum(1 for s in test["stimuli"] if s["kind"] == "system")
    print(f"wrote {out / 'index.html'}: {test['clips']} trials, {systems} systems with a hidden reference and a "
          f"{test['anchor_hz'] / 1000:g} kHz anchor. Open it in a browser (no server needed); each listener's "
          f"'Save ratings' gives ratings-<name>.json: `targetkl listen --results {out}/ratings/*.json`")
    return 0


def _add_gen_arguments(parser: argparse.ArgumentParser, batch: bool) -> None:
    parser.add_argument("--gen-preset", default="tiny", help="generator preset: tiny (default) or base")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one generator setting, e.g. --set width=256; repeatable")
    parser.add_argument("--steps", type=int, default=None, help="generator training steps")
    parser.add_argument("--seed", type=int, default=None, help="random seed")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    _add_device_argument(parser, batch)


def _add_device_argument(parser: argparse.ArgumentParser, batch: bool = True) -> None:
    parser.add_argument("--device", default=None, help="auto (default: CUDA when present), cpu, cuda or cuda:N")
    if batch:
        parser.add_argument("--batch-size", type=_positive_int, default=16,
                            help="clips (or chunks of long files) run through the model at once (default: 16)")


DATA_HELP = ("audio: a folder (searched recursively, captions.jsonl optional), a manifest (.jsonl/.csv with a path "
             "and optional caption per line) or WebDataset shards ('shards/train-{000000..000199}.tar'); indexed "
             "once and cached")


def _presets_text() -> str:
    from targetkl.config import PRESETS, preset

    lines = []
    for name in PRESETS:
        model = preset(name).model
        lines.append(f"{name} ({model.architecture}, {model.sample_rate / 1000:g} kHz, {model.frame_rate:g} Hz x "
                     f"{model.latent_dim})")
    return "presets (train/sweep --preset): " + ", ".join(lines) + ". Every subcommand: targetkl COMMAND --help."


def _metric_names() -> list[str]:
    from targetkl.eval.metrics import metric_names

    return list(metric_names(reference_only=True))


def progress_wanted(args: argparse.Namespace) -> bool:
    """Progress bars (with an ETA) on a terminal; none under -q/--quiet or when stderr is a file or pipe."""
    return not getattr(args, "quiet", False) and sys.stderr.isatty()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="targetkl",
        description="Train continuous audio VAEs to a chosen bitrate (target-KL) and measure them. "
                    "Rates are measured as frame_rate * mean KL per frame / ln 2 on held-out audio.",
        epilog=_presets_text())
    parser.add_argument("--version", action="version", version=f"targetkl {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser("demo", help="the whole job on the built-in corpus: corpus, train, eval, print rates",
                          description="Synthesize the demo corpus, train a tiny DAC-VAE at each target bitrate, "
                                      "and print target vs measured held-out kbps and mel distance next to an "
                                      "untrained model's. Writes OUT/corpus, OUT/runs/vae-<B>kbps (one run folder "
                                      "per target) and OUT/summary.json.")
    demo.add_argument("--out", default="demo", help="folder for the corpus and runs (default: demo)")
    demo.add_argument("--kbps", default="2", help="comma-separated target bitrates in kbps (default: 2)")
    demo.add_argument("--steps", type=_positive_int, default=None,
                      help="training steps per run (default: the tiny preset's)")
    demo.add_argument("--clips", type=_positive_int, default=300, help="clips in the corpus (default: 300)")
    demo.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(func=cmd_demo)

    corpus = sub.add_parser("corpus", help="synthesize the captioned demo corpus (no downloads)",
                            description="Write OUT/clips/*.wav (plucked strings, bells, chords, chirps, noise "
                                        "bursts, drums, sung vowels; --snr-db adds a recording noise floor), "
                                        "OUT/captions.jsonl with one truthful caption per clip and OUT/corpus.json "
                                        "with the settings. Seeded: the same arguments give the same files.")
    corpus.add_argument("out", help="output folder")
    corpus.add_argument("--kind", choices=("sounds", "speech"), default="sounds",
                        help="sounds: the synthesized demo sounds (default); speech: sentences of a small grammar "
                             "spoken by espeak-ng in several voices, the caption being the text (eval and sweep "
                             "then report wer and cer); --seconds and --snr-db apply to sounds only")
    corpus.add_argument("--clips", type=int, default=300, help="number of clips (default: 300)")
    corpus.add_argument("--seconds", type=_finite_float, default=1.0, help="clip length in seconds (default: 1.0)")
    corpus.add_argument("--sample-rate", type=int, default=16000, help="sample rate in Hz (default: 16000)")
    corpus.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    corpus.add_argument("--snr-db", type=float, default=float("inf"),
                        help="lay each clip over white noise this many dB below its RMS (default: inf, none)")
    corpus.add_argument("--channels", type=int, default=1,
                        help="1 (default) or 2: each clip panned to its own place between left and right "
                             "(train on it with --set model.audio_channels=2)")
    corpus.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    corpus.set_defaults(func=cmd_corpus)

    index = sub.add_parser("index", help="index a corpus (run by train/eval/sweep when missing or stale)",
                           description="Probe every audio file of DATA in parallel worker processes (length, native "
                                       "rate, channels, loudness, caption, label, split) and cache the index; a "
                                       "re-run probes only new or changed files. Files that cannot be used are "
                                       "listed with their reason. Writes one cache file under $TARGETKL_CACHE "
                                       "(default ~/.cache/targetkl/index), never into DATA.")
    index.add_argument("data", help=DATA_HELP)
    index.add_argument("--workers", type=_positive_int, default=None, help="probing processes (default: up to 8)")
    index.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    index.set_defaults(func=cmd_index)

    train = sub.add_parser("train", help="train a codec at a target bitrate (resumes if RUN has a checkpoint)",
                           description="Train a DAC-style codec with a Gaussian (vae), residual-VQ (rvq) or no "
                                       "(ae) bottleneck. For vae, --target-kbps B sets KL_target = B*ln2/frame_rate "
                                       "nats per frame. Writes RUN/config.json, RUN/metrics.jsonl, RUN/checkpoints "
                                       "(atomic), RUN/latent_stats.json and TensorBoard logs in RUN/tensorboard "
                                       "(scalars, held-out audio and spectrograms: tensorboard --logdir RUN); "
                                       "running it again on RUN resumes exactly.")
    train.add_argument("--data", required=True, help=DATA_HELP)
    train.add_argument("--out", required=True, help="run folder")
    _add_config_arguments(train)
    target = train.add_mutually_exclusive_group()
    target.add_argument("--target-kbps", type=float, default=None, help="target bitrate in kbps (vae)")
    target.add_argument("--target-nats", type=float, default=None,
                        help="target KL in nats per latent frame (vae), converted at the model's frame rate")
    train.add_argument("--kl-lambda", type=float, default=None,
                       help="the paper's squared loss lambda*(KL - KL_target)^2 with lambda per nat squared "
                            "(e.g. 1, 2 or 10); implies --kl-control target")
    train.add_argument("--bottleneck", default=None, metavar="NAME",
                       help="a registered bottleneck: vae (default), rvq, ae, or one added with "
                            "targetkl.bottlenecks.factory.register_bottleneck; a wrong name lists them")
    train.add_argument("--kl-control", default=None, metavar="NAME",
                       help="a registered rate controller for vae: lagrange (default: the target-KL loss plus a "
                            "multiplier that removes its offset), target, pi, capacity, fixed, or one added with "
                            "targetkl.control.register_controller; a wrong name lists them")
    train.add_argument("--steps", type=int, default=None, help="total optimizer steps")
    train.add_argument("--seed", type=int, default=None, help="random seed")
    train.add_argument("--batch-size", type=_positive_int, default=None, help="clips per batch")
    train.add_argument("--device", default=None, help="auto (default), cpu or cuda")
    train.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    train.set_defaults(func=cmd_train)

    evaluate = sub.add_parser("eval", help="measured held-out rate vs target, and distortion metrics",
                              description="Evaluate RUN on the held-out split of DATA in eval mode: rate_kbps "
                                          "(measured), target_kbps, frame_rate, "
                                          f"{', '.join(_metric_names())}, with 95% intervals and per domain. "
                                          "Prints them; --json FILE also writes them.")
    evaluate.add_argument("run", help="run folder")
    evaluate.add_argument("--data", required=True, help="the audio the run trained on (folder, manifest or shards)")
    evaluate.add_argument("--json", default=None, metavar="FILE", help="also write the results as JSON")
    evaluate.add_argument("--fast", action="store_true", help="skip PESQ, STOI and ViSQOL")
    evaluate.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _add_device_argument(evaluate)
    evaluate.set_defaults(func=cmd_eval)

    sweep = sub.add_parser("sweep",
                           help="rate-distortion sweep: target-KL VAEs vs RVQ, fixed beta, AE and classic codecs",
                           description="Train (or reuse) one target-KL VAE per bitrate and the chosen baselines, "
                                       "evaluate all of them on the same held-out clips, and write SWEEP/rd.csv, "
                                       "rd.json, rd.png and report.html. An interrupted sweep continues where it "
                                       "stopped; finished runs are never retrained.")
    sweep.add_argument("--data", required=True, help=DATA_HELP)
    sweep.add_argument("--out", required=True, help="sweep folder")
    sweep.add_argument("--kbps", default="0.5,1,2,4,8", help="target bitrates in kbps (default: 0.5,1,2,4,8)")
    sweep.add_argument("--nats", default=None,
                       help="targets in nats per latent frame instead, e.g. 80,160,320,640,1280 (converted at the "
                            "preset's frame rate)")
    sweep.add_argument("--baselines", default="rvq,beta,ae,opus,mp3,codec2",
                       help="any of rvq (matched bitrates), beta (fixed KL weights), ae (plain autoencoders), "
                            "opus, mp3, codec2 (default: all)")
    sweep.add_argument("--betas", default="1e-4,1e-3,1e-2,1e-1", help="KL weights of the beta baseline")
    sweep.add_argument("--ae-widths", default="2,4,8", help="latent widths of the autoencoder baseline")
    sweep.add_argument("--architectures", default=None,
                       help="codec architectures with a target-KL line each, e.g. dac,oobleck (default: the "
                            "preset's); the others are systems vae-<name> at the same bitrates")
    _add_config_arguments(sweep)
    sweep.add_argument("--fast", action="store_true", help="skip PESQ, STOI and ViSQOL")
    sweep.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    _add_device_argument(sweep)
    sweep.set_defaults(func=cmd_sweep)

    controllers = sub.add_parser("controllers", help="compare the rate controllers on real audio at several rates",
                                 description="Train (or reuse) one VAE per controller and target rate, then report "
                                             "the held-out rate against the target, the step from which the "
                                             "whole-clip training rate stays within 2% of the target, and the mel "
                                             "distance; writes OUT/controllers.json, .csv and a rate-vs-step plot.")
    controllers.add_argument("--data", required=True, help=DATA_HELP)
    controllers.add_argument("--out", required=True, help="output folder (runs are kept and reused)")
    controllers.add_argument("--kbps", default="0.5,2,8", help="target bitrates in kbps (default: 0.5,2,8)")
    controllers.add_argument("--controllers", default="target,capacity,pi,lagrange",
                             help="comma-separated controllers (default: target,capacity,pi,lagrange)")
    _add_config_arguments(controllers)
    controllers.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    _add_device_argument(controllers)
    controllers.set_defaults(func=cmd_controllers)

    sanity = sub.add_parser("sanity",
                            help="Shannon-limit check: each rate controller on a Gaussian source with known D(R)",
                            description="Train a linear Gaussian VAE with each controller at each target rate on "
                                        "i.i.d. Gaussian vectors with unequal variances, and compare its distortion "
                                        "with the reverse water-filling D(R). Prints target and reached bits per "
                                        "vector, distortion, D(R) and the gap in dB; --json FILE also writes them.")
    sanity.add_argument("--controllers", default="target,capacity,pi,lagrange,fixed",
                        help="comma-separated controllers (default: all five)")
    sanity.add_argument("--bits", default="2,6,12", help="target rates in bits per vector (default: 2,6,12)")
    sanity.add_argument("--steps", type=_positive_int, default=3000, help="training steps per model (default: 3000)")
    sanity.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    sanity.add_argument("--json", default=None, metavar="FILE",
                        help="also write rows with controller, target_bits, reached_bits, distortion, "
                             "shannon_distortion, gap_db")
    sanity.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    sanity.set_defaults(func=cmd_sanity)

    pre = sub.add_parser("pre-encode", help="store a run's latents (posterior mean and std) with captions",
                         description="Encode every clip of DATA (train and held-out split) with RUN's encoder in "
                                     "eval mode. Writes OUT/latents.safetensors, OUT/manifest.jsonl (captions, "
                                     "labels, split) and OUT/info.json (the run, frame rate, measured held-out "
                                     "rate).")
    pre.add_argument("run", help="run folder (a vae run)")
    pre.add_argument("--data", required=True, help=DATA_HELP)
    pre.add_argument("--out", required=True, help="latents folder to write")
    pre.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _add_device_argument(pre)
    pre.set_defaults(func=cmd_pre_encode)

    gen_train = sub.add_parser("gen-train", help="train the text-to-latent generator (flow matching, CFG)",
                               description="Train a small diffusion transformer with rectified flow matching on "
                                           "pre-encoded latents, conditioned on MiniLM caption embeddings (dropped "
                                           "10% of the time for classifier-free guidance). Writes GEN/gen_config.json, "
                                           "GEN/checkpoints, GEN/metrics.jsonl and GEN/tensorboard; resumes if GEN has "
                                           "a checkpoint.")
    gen_train.add_argument("--latents", required=True, help="folder written by `targetkl pre-encode`")
    gen_train.add_argument("--out", required=True, help="generator folder")
    _add_gen_arguments(gen_train, batch=False)
    gen_train.set_defaults(func=cmd_gen_train)

    generate = sub.add_parser("generate", help="text to audio with a trained generator and its VAE",
                              description="Sample latents for PROMPT with classifier-free guidance and decode them "
                                          "with the VAE the generator was trained on. Writes output, a 16-bit wav "
                                          "file.")
    generate.add_argument("generator", help="generator folder (from `targetkl gen-train`)")
    generate.add_argument("prompt", help='text, e.g. "a low plucked string note"')
    generate.add_argument("output", help="wav file to write")
    generate.add_argument("--steps", type=_positive_int, default=32, help="Euler sampling steps (default: 32)")
    generate.add_argument("--cfg", type=_finite_float, default=3.0,
                          help="guidance scale; 1 = conditional model only (default: 3)")
    generate.add_argument("--seed", type=int, default=0, help="noise seed (default: 0)")
    generate.add_argument("--seconds", type=_finite_float, default=None,
                          help="length (default: the training clips' length)")
    _add_device_argument(generate, batch=False)
    generate.set_defaults(func=cmd_generate)

    select = sub.add_parser("select", help="train a generator on each VAE of a sweep and pick the best bitrate",
                            description="For every target-KL VAE of SWEEP: pre-encode, train the same generator "
                                        "with the same budget, score text match and Frechet distance against a "
                                        "judge trained on the corpus (and against random latents). Writes "
                                        "generation.json/csv/png and a report.html section; names the best bitrate.")
    select.add_argument("--sweep", required=True, help="sweep folder (from `targetkl sweep`)")
    select.add_argument("--data", default=None, help="the audio (default: the one the sweep used)")
    select.add_argument("--repeats", type=_positive_int, default=3,
                        help="generations per held-out caption (default: 3)")
    select.add_argument("--sample-steps", type=_positive_int, default=32, help="Euler sampling steps (default: 32)")
    select.add_argument("--cfg", type=_finite_float, default=3.0, help="guidance scale (default: 3)")
    select.add_argument("--embedding", default="judge",
                        help="audio embedding of the Frechet distance: judge (the corpus-trained classifier, default) "
                             "or a name registered with targetkl.gen.evaluate.register_audio_embedder")
    _add_gen_arguments(select, batch=True)
    select.set_defaults(func=cmd_select)

    listen = sub.add_parser("listen", help="a blind MUSHRA-style listening test of a sweep, and its results",
                            description="With SWEEP: write OUT/index.html, a self-contained listening-test page "
                                        "(after ITU-R BS.1534: per trial a reference, a hidden reference, a 3.5 kHz "
                                        "low-pass anchor and each system's decode of a held-out clip, shuffled; "
                                        "0-100 sliders; opened as a file, no server or network) and OUT/test.json. "
                                        "With --results: aggregate the ratings files the page saves (mean and 95% "
                                        "interval per system and rate, hidden-reference screening) and write "
                                        "listening.json and listening.png to the test folder and to the sweep, "
                                        "with a section in its report.html.")
    listen.add_argument("sweep", nargs="?", help="sweep folder (from `targetkl sweep`)")
    listen.add_argument("--out", default=None,
                        help="the test's folder (default SWEEP/listening-test); with --results, where to write the "
                             "results (default: the test folder above the ratings files)")
    listen.add_argument("--clips", type=_positive_int, default=None,
                        help="trials: the sweep's first N example clips (default: all it wrote)")
    listen.add_argument("--systems", default=None,
                        help="comma-separated systems or points, e.g. vae,rvq,opus or vae-2kbps (default: every "
                             "point with audio)")
    listen.add_argument("--results", nargs="+", default=None, metavar="RATINGS",
                        help="ratings-<name>.json files saved by the page, to aggregate")
    listen.set_defaults(func=cmd_listen)

    _file_command(sub, "encode", cmd_encode, "audio file to a latent file (safetensors)",
                  "Encode input (any audio file) with RUN's encoder; the latent file holds the posterior mean (and "
                  "std), sample rate, frame rate and length. Writes output (safetensors).", "audio file",
                  "latent file to write (.safetensors)")
    _file_command(sub, "decode", cmd_decode, "latent file back to a wav file",
                  "Decode a latent file written by `targetkl encode` with the same RUN. Writes output, a 16-bit wav "
                  "file.",
                  "latent file (.safetensors)", "wav file to write")
    compress = _file_command(sub, "compress", cmd_compress, "audio file to a .tkl bitstream (entropy-coded VAE latent)",
                             "Quantize RUN's posterior mean with a per-channel step tied to the posterior std and "
                             "range-code it under the N(0, 1) prior, into a .tkl file whose size matches the KL rate. "
                             "Writes output; prints the KL, payload and file rates in kbps.", "audio file",
                             ".tkl file to write")
    compress.add_argument("--json", help="also write the report (kl_kbps, payload_kbps, file_kbps, distortion) here")
    _file_command(sub, "decompress", cmd_decompress, ".tkl bitstream back to a wav file",
                  "Decode a .tkl file written by `targetkl compress` with the same RUN; a damaged file or one from "
                  "another model is refused. Writes output, a 16-bit wav file.", ".tkl file", "wav file to write")
    export = sub.add_parser("export", help="write a run for other tools: diffusers (Oobleck VAEs) or safetensors",
                            description="Write RUN to the folder OUT. --format diffusers (an oobleck run): config.json "
                                        "and diffusion_pytorch_model.safetensors for diffusers.AutoencoderOobleck."
                                        "from_pretrained(OUT); --format safetensors (any run): model.safetensors. Both "
                                        "write targetkl.json: the config, the measured held-out rate and per-channel "
                                        "latent mean and std over training clips (to scale latents for diffusion).")
    export.add_argument("run", help="run folder")
    export.add_argument("out", help="folder to write")
    export.add_argument("--data", required=True, help="the run's training data (for the latent statistics)")
    export.add_argument("--format", choices=("diffusers", "safetensors"), default="diffusers",
                        help="diffusers: an AutoencoderOobleck folder (Oobleck runs); safetensors: the state dict, "
                             "any run (default: diffusers)")
    export.add_argument("--stats-clips", type=int, default=256, help="training clips for the latent statistics")
    export.set_defaults(func=cmd_export)
    return parser


def _file_command(sub, name: str, func, help_text: str, description: str, input_help: str,
                  output_help: str) -> argparse.ArgumentParser:
    """A ``targetkl NAME RUN INPUT OUTPUT`` subcommand."""
    command = sub.add_parser(name, help=help_text, description=description)
    command.add_argument("run", help="run folder")
    command.add_argument("input", help=input_help)
    command.add_argument("output", help=output_help)
    _add_device_argument(command)
    command.set_defaults(func=func)
    return command


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    from targetkl.errors import USER_ERRORS
    from targetkl.train.trainer import TrainingInterrupted

    try:
        return args.func(args)
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # a path the system refused (a folder for a file, no permission, a full disk)
        where = f"{error.filename}: " if error.filename else ""
        print(f"error: {where}{error.strerror or error}", file=sys.stderr)
        return 2
    except TrainingInterrupted as stop:
        print(str(stop), file=sys.stderr)
        return 130
    except (MemoryError, RuntimeError) as error:
        if not isinstance(error, MemoryError) and not _out_of_memory(error):
            raise
        print("error: out of memory; lower --batch-size (train.batch_size), data.segment_seconds or the model's "
              f"sizes ({str(error).splitlines()[0][:120]})", file=sys.stderr)
        return 2


def _out_of_memory(error: RuntimeError) -> bool:
    """torch's CPU allocator and CUDA say 'out of memory' in a RuntimeError."""
    text = str(error)
    return "can't allocate memory" in text or "out of memory" in text.lower()


if __name__ == "__main__":
    sys.exit(main())
