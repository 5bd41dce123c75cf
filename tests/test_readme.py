"""Every code block of the README: Python blocks run as written (against a trained run where the README
expects one), and every `targetkl` command of the shell blocks parses with the real CLI, so neither can
rot as the code changes. (The commands themselves run in the CLI and acceptance tests.)"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import quick_config

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
