"""Training and coding speed of each preset on this machine; prints JSON.

    python benchmarks/speed.py [--presets tiny,base-24k,dac-44k] [--steps 3] [--device auto]

Per preset (each in its own process, so peak memory is its own): optimizer steps per second and
training audio seconds per second (batch x crop length), the encode+decode real-time factor on 10 s of
audio (seconds of compute per second of audio; below 1 is faster than real time), parameter count
and peak memory (RSS on CPU, allocated memory on CUDA). Data is random noise: this measures compute,
not learning.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

from targetkl.config import resolve
from targetkl.losses import ReconstructionLoss
from targetkl.models.codec import build_codec
from targetkl.train.trainer import choose_device


def measure(preset: str, steps: int, device_name: str) -> dict:
    config = resolve(preset, flags={"train.device": device_name})
    device = choose_device(config.train.device)
    torch.manual_seed(0)
    model = build_codec(config).to(device).train()
    loss_config = config.loss
    reconstruction = ReconstructionLoss(config.model.sample_rate, loss_config.mel_windows, loss_config.stft_windows,
                                        loss_config.mel_weight, loss_config.stft_weight,
                                        loss_config.waveform_weight).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    audio = 0.1 * torch.randn(config.train.batch_size, 1, config.segment_samples, device=device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda" and config.train.bf16)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            decoded, encoded = model(audio)
            loss = reconstruction(decoded.float(), audio)[0] + encoded.penalty
        loss.backward()
        optimizer.step()

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    step()
    synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize()
    seconds_per_step = (time.perf_counter() - started) / steps

    model.eval()
    clip = 0.1 * torch.randn(1, 1, 10 * config.model.sample_rate, device=device)
    with torch.no_grad(), autocast:
        model.decode(model.encode(model.pad(clip)).z)
        synchronize()
        started = time.perf_counter()
        model.decode(model.encode(model.pad(clip)).z)
        synchronize()
    coding_seconds = time.perf_counter() - started
    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2 ** 20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"preset": preset, "device": str(device), "threads": torch.get_num_threads(),
            "parameters": sum(p.numel() for p in model.parameters()), "batch_size": config.train.batch_size,
            "crop_seconds": config.segment_samples / config.model.sample_rate,
            "train_steps_per_second": 1 / seconds_per_step,
            "train_audio_seconds_per_second": config.train.batch_size * config.segment_samples
            / config.model.sample_rate / seconds_per_step,
            "encode_decode_real_time_factor": coding_seconds / 10.0, "peak_memory_mb": peak_mb}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="tiny,base-24k,dac-44k")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.steps, args.device)))
        return
    results = []
    for preset in args.presets.split(","):
        output = subprocess.run([sys.executable, __file__, "--one", preset, "--steps", str(args.steps), "--device",
                                 args.device], capture_output=True, text=True, check=True).stdout
        results.append(json.loads(output.strip().splitlines()[-1]))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
