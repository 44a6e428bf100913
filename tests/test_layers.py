"""The import-linter "layers" contract in pyproject.toml: the tree keeps it, and an import that
points up (a domain app importing a face) breaks it, so `lint-imports` in scripts/test fails."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    # Run from `root`, which lint-imports puts first on the import path: its `iothub` is the one read.
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--config", str(root / "pyproject.toml")],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def copy_of_the_tree(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "iothub", tmp_path / "iothub", ignore=shutil.ignore_patterns("__pycache__", "static"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_tree_keeps_the_layers_contract(tmp_path):
    result = lint_imports(copy_of_the_tree(tmp_path))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 1 kept, 0 broken." in result.stdout


def test_a_domain_app_importing_a_face_breaks_the_contract(tmp_path):
    root = copy_of_the_tree(tmp_path)
    services = root / "iothub" / "devices" / "services.py"
    services.write_text(services.read_text() + "\nfrom iothub.api.health import HealthView  # noqa\n")

    result = lint_imports(root)

    assert result.returncode == 1, result.stdout
    assert "BROKEN" in result.stdout
    assert "iothub.devices is not allowed to import iothub.api" in result.stdout


def test_a_ground_floor_module_importing_a_flow_breaks_the_contract(tmp_path):
    root = copy_of_the_tree(tmp_path)
    db = root / "iothub" / "db.py"
    db.write_text(db.read_text() + "\nimport iothub.ingest.validation\n")

    result = lint_imports(root)

    assert result.returncode == 1, result.stdout
    assert "iothub.db is not allowed to import iothub.ingest" in result.stdout
