"""Shared fixtures: a small synthesized corpus and a tiny config that trains in seconds."""

from __future__ import annotations

import os
import tempfile

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
if "TARGETKL_CACHE" not in os.environ:  # an index cache of the test run's own, removed when it ends
    import atexit
    import shutil

    os.environ["TARGETKL_CACHE"] = tempfile.mkdtemp(prefix="targetkl-index-")
    atexit.register(shutil.rmtree, os.environ["TARGETKL_CACHE"], True)
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory):
    from targetkl.data.corpus import write_corpus

    return write_corpus(tmp_path_factory.mktemp("corpus"), clips=28, seconds=0.5, progress=False)


@pytest.fixture(scope="session")
def demo_corpus(tmp_path_factory):
    """The default demo corpus (300 one-second clips), as `targetkl corpus` writes it."""
    from targetkl.data.corpus import write_corpus

    return write_corpus(tmp_path_factory.mktemp("demo_corpus"), progress=False)


def quick_config(**sections):
    """The tiny preset shrunk further for unit tests, with overrides ``section={key: value}``."""
    from targetkl.config import apply_overrides, preset, validate

    overrides = {"train": {"steps": 4, "batch_size": 2, "log_every": 1, "checkpoint_every": 2, "warmup_steps": 1},
                 "model": {"encoder_dim": 4, "decoder_dim": 16, "latent_dim": 8},
                 "loss": {"mel_windows": (128, 256), "stft_windows": (256,)},
                 "rate": {"free_steps": 0, "warmup_steps": 0, "calibrate_every": 1, "calibrate_clips": 4}}
    for section, values in sections.items():
        overrides.setdefault(section, {}).update(values)
    config = apply_overrides(preset("tiny"), overrides)
    validate(config)
    return config


def chromium_flags() -> list[str]:
    import shutil

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    assert browser, "chromium is needed for the report check: apt-get install chromium"
    return [browser, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1200,1600"]


def chromium_dom(page) -> str:
    """The page's DOM after load, as headless Chromium renders it."""
    import subprocess

    return subprocess.run(chromium_flags() + ["--dump-dom", page.as_uri()], capture_output=True, text=True,
                          timeout=120).stdout


class Chromium:
    """Headless Chromium driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``: JSON messages
    ending in NUL on file descriptors 3 and 4), so a test can click, type, read the page and save downloads
    without any package beyond the browser."""

    def __init__(self, folder, width: int = 1200, height: int = 1400):
        import json
        import os
        import shlex
        import subprocess

        self.json, self.os = json, os
        to_browser_read, self.to_browser = os.pipe()
        self.from_browser, from_browser_write = os.pipe()
        flags = chromium_flags()[:-1] + [f"--window-size={width},{height}", "--remote-debugging-pipe",
                                         f"--user-data-dir={folder / 'profile'}",
                                         "--autoplay-policy=no-user-gesture-required", "about:blank"]
        command = f"exec {shlex.join(flags)} 3<&{to_browser_read} 4>&{from_browser_write}"
        self.process = subprocess.Popen(["bash", "-c", command], pass_fds=(to_browser_read, from_browser_write),
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_browser_read)
        os.close(from_browser_write)
        self.buffer, self.next_id, self.events = b"", 0, []
        self.downloads = folder / "downloads"
        self.downloads.mkdir(parents=True, exist_ok=True)
        self.send("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(self.downloads),
                                                  "eventsEnabled": True}, session=False)
        target = self.send("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True},
                                 session=False)["sessionId"]
        self.send("Page.enable")

    def _message(self, timeout: float = 60.0) -> dict:
        import select

        while b"\0" not in self.buffer:
            ready, _, _ = select.select([self.from_browser], [], [], timeout)
            assert ready, "no answer from chromium"
            chunk = self.os.read(self.from_browser, 1 << 20)
            assert chunk, "chromium closed its pipe"
            self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return self.json.loads(message)

    def send(self, method: str, params: dict | None = None, session: bool = True) -> dict:
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self.session
        self.os.write(self.to_browser, self.json.dumps(message).encode() + b"\0")
        while True:
            answer = self._message()
            if answer.get("id") == self.next_id:
                assert "error" not in answer, (method, answer["error"])
                return answer.get("result", {})
            self.events.append(answer)

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True})
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30.0):
        import time

        deadline = time.time() + timeout
        while time.time() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {expression}")

    def open(self, page) -> None:
        self.send("Page.navigate", {"url": page.as_uri()})
        self.wait_for("document.readyState === 'complete' && document.body.dataset.state === 'ready'")

    def click(self, selector: str, fraction_x: float = 0.5, fraction_y: float = 0.5) -> None:
        """A real mouse click (a user gesture) at a point of the element ``selector`` (fractions of its box)."""
        box = self.evaluate(f"(function () {{ var e = document.querySelector({self.json.dumps(selector)}); "
                            "e.scrollIntoView({block: 'center'}); var r = e.getBoundingClientRect(); "
                            "return [r.left, r.top, r.width, r.height]; })()")
        x, y = box[0] + fraction_x * box[2], box[1] + fraction_y * box[3]
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1})

    def type_text(self, selector: str, text: str) -> None:
        self.click(selector)
        self.send("Input.insertText", {"text": text})

    def screenshot(self, path) -> None:
        import base64

        path.write_bytes(base64.b64decode(self.send("Page.captureScreenshot", {"format": "png"})["data"]))

    def close(self) -> None:
        try:
            self.send("Browser.close", session=False)
        except (AssertionError, OSError):
            pass
        try:
            self.process.wait(timeout=20)
        except Exception:
            self.process.kill()
        self.os.close(self.to_browser)
        self.os.close(self.from_browser)


def write_fake_sweep(sweep, clips: int = 2, sample_rate: int = 16000):
    """A sweep folder as `targetkl sweep` leaves it (rd.json, sweep.json, report.html, example clips) for a VAE,
    an RVQ and an Opus point, without training anything: the decodes are the originals plus noise."""
    import json

    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(0)
    t = np.arange(sample_rate // 2) / sample_rate
    originals = []
    for clip in range(clips):
        audio = 0.3 * np.sin(2 * np.pi * (220 + 110 * clip) * t) + 0.05 * np.sin(2 * np.pi * 5000 * t)
        path = sweep / "audio" / "original" / f"clip{clip}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, audio, sample_rate, subtype="PCM_16")
        originals.append(str(path))
    rows = []
    for system, label, kbps, noise in (("vae", "1kbps", 1.0, 0.05), ("rvq", "1kbps", 1.0, 0.1),
                                       ("opus", "6", 6.2, 0.02)):
        paths = []
        for clip, original in enumerate(originals):
            audio, _ = sf.read(original)
            path = sweep / "audio" / f"{system}-{label}" / f"clip{clip}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, audio + noise * rng.standard_normal(len(audio)), sample_rate, subtype="PCM_16")
            paths.append(str(path))
        rows.append({"system": system, "label": label, "domain": "all", "rate_kbps": kbps, "target_kbps": kbps,
                     "mel_distance": noise, "audio": paths})
    (sweep / "rd.json").write_text(json.dumps(rows))
    (sweep / "sweep.json").write_text(json.dumps({"preset": "tiny", "data": str(sweep), "originals": originals}))
    from targetkl.eval.report import refresh_report

    refresh_report(sweep)
    return sweep
