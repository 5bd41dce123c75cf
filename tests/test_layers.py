"""The package's layering, read from the source: who may import whom."""

import ast
from pathlib import Path

import pytest

import targetkl

PACKAGE = Path(targetkl.__file__).parent


def _imports(module_path: Path) -> list[tuple[str, list[str]]]:
    """``(module, names)`` for every import in the file, relative imports resolved against the package."""
    tree = ast.parse(module_path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.module, [alias.name for alias in node.names]))
        elif isinstance(node, ast.Import):
            found.extend((alias.name, []) for alias in node.names)
    return found


@pytest.mark.parametrize("module,forbidden", [
    ("control.py", "targetkl.train"),  # rate control is usable without the trainer
    ("bitstream.py", "targetkl.eval"),  # the file format computes no metrics
    ("collectives.py", "targetkl."),  # bottom layer
    ("fileio.py", "targetkl."),  # bottom layer
    ("errors.py", "targetkl."),  # every CLI call imports it: it must not load the package
    ("checkpoints.py", "targetkl.train"),  # the run folder's format: training writes it, everything else reads it
    ("checkpoints.py", "targetkl.models"),
    ("runs.py", "targetkl.train"),  # reading a run never climbs up into training
    ("api.py", "targetkl.train"),
    ("export.py", "targetkl.train"),
    ("eval/evaluate.py", "targetkl.train"),
    ("eval/measure.py", "targetkl.train"),
])
def test_lower_layers_do_not_import_upper_ones(module, forbidden):
    imported = [name for name, _ in _imports(PACKAGE / module)]
    assert not [name for name in imported if name.startswith(forbidden)], imported


def test_no_module_imports_another_modules_private_names():
    private = []
    for path in PACKAGE.rglob("*.py"):
        for module, names in _imports(path):
            if module.startswith("targetkl"):
                private += [f"{path.relative_to(PACKAGE)}: {module}.{name}" for name in names
                            if name.startswith("_") and not name.startswith("__")]
    assert not private


def test_importing_the_config_loads_no_torch():
    import subprocess
    import sys

    code = "import sys, targetkl.config, targetkl.rate, targetkl.errors; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"


def test_the_config_imports_nothing_of_the_package_but_errors_and_rate():
    """The parts register their sections and checks into the config; it names them only in ``PARTS``."""
    from targetkl import config

    imported = {name for name, _ in _imports(PACKAGE / "config.py") if name.startswith("targetkl")}
    imported |= {f"targetkl.{name}" for module, names in _imports(PACKAGE / "config.py") if module == "targetkl"
                 for name in names}
    assert imported <= {"targetkl", "targetkl.errors", "targetkl.rate"}, imported
    import dataclasses

    config.load_parts()
    from targetkl.control import CONTROLLERS

    assert set(config.ENTRY_SETTINGS["rate"]) == {name for name, cls in CONTROLLERS.items()
                                                  if dataclasses.fields(cls.Settings)}
    assert {"vae", "rvq", "oobleck"} <= set(config.ENTRY_SETTINGS["model"])
    assert len(config.CHECKS) == len(set(config.CHECKS)) >= 4  # controller, bottleneck, architecture, discriminators
