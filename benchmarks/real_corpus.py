"""A corpus of real recordings, assembled from a Debian package: music, recorded voices and sound effects.

    python benchmarks/real_corpus.py OUT [--deb hedgewars-data_*.deb]

Without ``--deb`` it runs ``apt-get download hedgewars-data`` (145 MB; the package is unpacked with
``dpkg-deb -x``, never installed). From the game's data it copies

- ``Data/Music/*.ogg`` (26 tracks of 4-6 minutes, 44.1 kHz stereo) to ``OUT/music/``: domain ``music``,
  label ``music``, caption ``game music, <name>``;
- ``Data/Sounds/voices/<pack>/*.ogg`` (about 840 lines in 16 voice packs) to ``OUT/speech/<pack>/``: domain
  ``speech``, label the pack, caption ``<pack> voice saying <line>``;
- ``Data/Sounds/*.ogg`` (about 100 effects) to ``OUT/effects/``: domain ``effects``, label ``effect``,
  caption ``sound effect, <name>``,

and writes ``OUT/captions.jsonl`` (``path``, ``caption``, ``label``, ``domain``), ``OUT/corpus.json`` (the source
package and version) and the package's ``copyright`` file. Files stay whole (the data path crops long tracks).
Running it again on the same OUT rewrites the listing and copies only missing files. Prints a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from targetkl.fileio import write_text_atomic

PACKAGE = "hedgewars-data"
DATA = Path("usr/share/games/hedgewars/Data")


class CorpusError(RuntimeError):
    """The package could not be fetched or unpacked; the message names what to install or pass."""


def download(folder: Path) -> Path:
    """``apt-get download hedgewars-data`` into ``folder``; the .deb's path."""
    if shutil.which("apt-get") is None:
        raise CorpusError(f"apt-get not found: fetch the {PACKAGE} .deb elsewhere and pass it with --deb")
    result = subprocess.run(["apt-get", "download", PACKAGE], cwd=folder, capture_output=True, text=True,
                            timeout=1800)
    debs = sorted(folder.glob(f"{PACKAGE}_*.deb"))
    if result.returncode != 0 or not debs:
        detail = (result.stderr.strip().splitlines() or ["no .deb written"])[-1]
        raise CorpusError(f"apt-get download {PACKAGE} failed ({detail}); run `apt-get update` first, or pass the "
                          ".deb with --deb")
    return debs[-1]


def unpack(deb: Path, folder: Path) -> Path:
    """The package's files under ``folder`` (``dpkg-deb -x``); the game's ``Data`` folder."""
    if shutil.which("dpkg-deb") is None:
        raise CorpusError("dpkg-deb not found: install the Debian package dpkg")
    result = subprocess.run(["dpkg-deb", "-x", str(deb), str(folder)], capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        raise CorpusError(f"{deb}: not a readable .deb ({result.stderr.strip()[:200]}); download it again")
    if not (folder / DATA).is_dir():
        raise CorpusError(f"{deb}: holds no {DATA}; pass the {PACKAGE} package")
    return folder / DATA


def words(stem: str) -> str:
    """A file name in words: ``CollectCrate`` -> ``collect crate``, ``airmine_impact`` -> ``airmine impact``."""
    spaced = re.sub(r"(?<=[a-z])(?=[A-Z0-9])", " ", stem.replace("_", " ").replace("-", " "))
    return " ".join(spaced.lower().split())


def listing(data: Path) -> list[tuple[Path, str, dict]]:
    """``(source file, path in OUT, caption row)`` for every recording of the three domains."""
    items = []
    for file in sorted((data / "Music").glob("*.ogg")):
        items.append((file, f"music/{file.name}", {"caption": f"game music, {words(file.stem)}", "label": "music",
                                                   "domain": "music"}))
    for file in sorted((data / "Sounds" / "voices").glob("*/*.ogg")):
        pack = file.parent.name
        items.append((file, f"speech/{pack}/{file.name}", {
            "caption": f"{words(pack)} voice saying {words(file.stem)}", "label": pack, "domain": "speech"}))
    for file in sorted((data / "Sounds").glob("*.ogg")):
        items.append((file, f"effects/{file.name}", {"caption": f"sound effect, {words(file.stem)}",
                                                     "label": "effect", "domain": "effects"}))
    return items


def build(out: Path, deb: Path | None = None) -> dict:
    """Write the corpus into ``out``; returns the summary (files and hours per domain)."""
    import soundfile as sf

    with tempfile.TemporaryDirectory(prefix="tkl-real-corpus-") as scratch:
        scratch = Path(scratch)
        deb = deb or download(scratch)
        data = unpack(deb, scratch / "root")
        items = listing(data)
        if not items:
            raise CorpusError(f"{deb}: no .ogg recordings under {DATA}")
        out.mkdir(parents=True, exist_ok=True)
        rows, seconds = [], {}
        for source, relative, row in items:
            target = out / relative
            if not target.is_file() or target.stat().st_size != source.stat().st_size:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, target)
            rows.append({"path": relative, **row})
            try:
                seconds[row["domain"]] = seconds.get(row["domain"], 0.0) + sf.info(str(target)).duration
            except RuntimeError:  # a file the index will skip, with its reason
                pass
        copyright_file = scratch / "root" / "usr/share/doc" / PACKAGE / "copyright"
        if copyright_file.is_file():
            shutil.copyfile(copyright_file, out / "copyright")
    write_text_atomic(out / "captions.jsonl", "".join(json.dumps(row) + "\n" for row in rows))
    summary = {"source": deb.name, "files": {d: sum(r["domain"] == d for r in rows) for d in seconds},
               "hours": {d: round(s / 3600, 3) for d, s in seconds.items()}, "out": str(out.resolve())}
    write_text_atomic(out / "corpus.json", json.dumps({"kind": "real", **summary}, indent=2) + "\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="folder to write the corpus into")
    parser.add_argument("--deb", default=None, help=f"a {PACKAGE} .deb already downloaded (default: apt-get download)")
    args = parser.parse_args(argv)
    try:
        summary = build(Path(args.out), Path(args.deb) if args.deb else None)
    except (CorpusError, OSError, subprocess.TimeoutExpired) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
