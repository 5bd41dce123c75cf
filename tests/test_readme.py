"""Every code block of the README: Python blocks run as written (against a trained run where the README
expects one), and every `targetkl` command of the shell blocks parses with the real CLI, so neither can
rot as the code changes; the listening-test block also runs as written, on a sweep folder made without
training. (The other commands run in the CLI and acceptance tests.)"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import quick_config, write_fake_sweep

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.S)


def _commands(block: str) -> list[list[str]]:
    """Each `targetkl ...` (or `-m targetkl.cli ...`) command of a shell block, as its argument list."""
    text = re.sub(r"\\\n\s*", " ", block)
    commands = []
    for line in text.splitlines():
        line = line.split(" #", 1)[0].strip()
        if line.startswith("#"):
            continue
        for part in line.split("&&"):
            words = shlex.split(part)
            if words[:1] == ["targetkl"]:
                commands.append(words[1:])
            elif "targetkl.cli" in words:
                commands.append(words[words.index("targetkl.cli") + 1:])
    return commands


def test_the_readme_has_the_blocks_this_test_reads():
    assert len(_blocks("python")) >= 1 and len(_blocks("bash")) >= 5
    first = _commands(_blocks("bash")[0])
    assert first[0][0] == "demo"  # the README opens with the demo command


@pytest.mark.parametrize("index", range(len(_blocks("bash"))))
def test_every_shell_command_parses(index):
    from targetkl.cli import build_parser

    parser = build_parser()
    for words in _commands(_blocks("bash")[index]):
        try:
            args = parser.parse_args(words)
        except SystemExit as exit_info:
            raise AssertionError(f"README command `targetkl {shlex.join(words)}` does not parse") from exit_info
        assert args.func is not None


@pytest.fixture(scope="module")
def demo_like_run(small_corpus, tmp_path_factory):
    """A short tiny run where the README's Python block expects the demo's: demo/runs/vae-2kbps."""
    from targetkl.train.trainer import Trainer

    folder = tmp_path_factory.mktemp("readme")
    run = folder / "demo" / "runs" / "vae-2kbps"
    Trainer(quick_config(), small_corpus, run, progress=False).run()
    return folder


@pytest.mark.parametrize("index", range(len(_blocks("python"))))
def test_every_python_block_runs_as_written(index, demo_like_run):
    code = _blocks("python")[index]
    result = subprocess.run([sys.executable, "-c", code], cwd=demo_like_run, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


def test_the_listening_block_runs_as_written(tmp_path, monkeypatch, capsys):
    """`targetkl listen sweep ...` then `--results listening-test/ratings/*.json`, with the ratings file a
    listener would send back put where the README says."""
    import glob
    import json

    from targetkl.cli import main

    block = next(b for b in _blocks("bash") if "targetkl listen" in b)
    write_fake_sweep(tmp_path / "sweep", clips=3)
    monkeypatch.chdir(tmp_path)
    for words in _commands(block):
        if "--results" in words:
            test = json.loads((tmp_path / "listening-test" / "test.json").read_text())
            ratings = {"format": "targetkl-listening-ratings", "test_id": test["test_id"], "sweep": test["sweep"],
                       "listener": "reader", "stimuli": test["stimuli"],
                       "trials": [{"clip": i, "order": [s["id"] for s in test["stimuli"]],
                                   "ratings": {s["id"]: 100 if s["kind"] == "reference" else 50
                                               for s in test["stimuli"]}} for i in range(test["clips"])]}
            (tmp_path / "listening-test" / "ratings").mkdir()
            (tmp_path / "listening-test" / "ratings" / "ratings-reader.json").write_text(json.dumps(ratings))
            words = [w for pattern in words for w in (sorted(glob.glob(pattern)) if "*" in pattern else [pattern])]
        assert main(words) == 0, capsys.readouterr().err
    results = json.loads((tmp_path / "sweep" / "listening.json").read_text())
    assert [r["system"] for r in results["rows"]] == ["reference", "anchor", "vae", "rvq", "opus"]
