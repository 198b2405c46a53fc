"""Runtime code never imports the developer tools: the import-linter contract holds and bites.

``make lint`` runs ``lint-imports`` on the checkout. These tests check that the contract
covers every runtime module of the package, and that it fails on a copy of the package in
which one runtime module imports ``deeptrust.devtools``.
"""

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "deeptrust"
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _contract() -> dict:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (contract,) = config["contracts"]
    return contract


def _lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(root / "pyproject.toml"), "--no-cache"],
        cwd=root,
        env={"PATH": str(LINT_IMPORTS.parent), "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_every_runtime_module_is_bound_by_the_contract():
    contract = _contract()
    assert contract["forbidden_modules"] == ["deeptrust.devtools"]
    top_level = {
        f"deeptrust.{path.stem if path.suffix == '.py' else path.name}"
        for path in PACKAGE.iterdir()
        if (path.suffix == ".py" or (path / "__init__.py").exists())
        and path.name not in {"__init__.py", "devtools"}
    }
    assert top_level == set(contract["source_modules"])


def test_the_rule_fails_when_a_runtime_module_imports_a_developer_tool(tmp_path):
    def only_python(folder: str, names: list[str]) -> list[str]:
        return [n for n in names if not (n.endswith(".py") or Path(folder, n).is_dir())]

    # The symlinked folders are copied as folders, so the copy is the installed layout.
    shutil.copytree(PACKAGE, tmp_path / "deeptrust", ignore=only_python)
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    assert _lint_imports(tmp_path).returncode == 0, "the copy keeps the contract"

    codec = tmp_path / "deeptrust" / "streams" / "codec.py"
    codec.write_text(codec.read_text() + "\nfrom deeptrust.devtools.debian import debian_package\n")
    broken = _lint_imports(tmp_path)
    assert broken.returncode != 0
    assert "deeptrust.streams.codec -> deeptrust.devtools.debian" in broken.stdout
