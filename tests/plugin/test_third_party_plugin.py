"""A third-party arch plugin, for real: wheels built from copies of ``docs/plugin-template``,
installed with kvmcore (from this checkout) into a fresh virtual environment.

Checks that ``kvmcore plugins`` lists it, ``kvmcore decode`` decodes with it, and
``pytest --kvmcore-conformance NAME`` passes for it; and that a second copy whose fault type
breaks the contract (``write: int``) is refused with the contract message without stopping the
good one from loading. pip fetches pluggy, stevedore, setuptools, pytest and hypothesis from PyPI.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "docs" / "plugin-template"
GOOD, BAD = "demo", "demobad"
TIMEOUT = 600


def copy_template(dest: Path, arch: str, *, break_write: bool = False) -> Path:
    """The template renamed to ``kvmcore-<arch>`` / ``kvmcore_<arch>`` / arch ``<arch>``."""
    shutil.copytree(TEMPLATE, dest, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", ".pytest_cache", ".hypothesis", "build", "dist"))
    (dest / "src" / "kvmcore_example").rename(dest / "src" / f"kvmcore_{arch}")
    for path in dest.rglob("*"):
        if path.suffix not in (".py", ".toml", ".md"):
            continue
        text = path.read_text()
        text = text.replace("kvmcore_example", f"kvmcore_{arch}").replace("kvmcore-example", f"kvmcore-{arch}")
        text = text.replace('"example"', f'"{arch}"').replace("\nexample = ", f"\n{arch} = ")
        if break_write and path.name == "plugin.py":
            assert "    write: bool\n" in text
            text = text.replace("    write: bool\n", "    write: int\n")
        path.write_text(text)
    return dest


def copy_core(dest: Path) -> Path:
    """kvmcore's sources from this checkout, so building it leaves nothing in the work tree."""
    dest.mkdir()
    shutil.copy2(ROOT / "pyproject.toml", dest)
    readme = ROOT / "README.md"
    if readme.exists():
        shutil.copy2(readme, dest)
    else:  # the build needs the file the metadata names
        (dest / "README.md").write_text("kvmcore\n")
    shutil.copytree(ROOT / "kvmcore", dest / "kvmcore", ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def clean_env() -> dict[str, str]:
    drop = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTEST_ADDOPTS", "PYTEST_PLUGINS", "PYTEST_DISABLE_PLUGIN_AUTOLOAD")
    return {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("KVMCORE_")}


def run(cmd: list[str | Path], cwd: Path, *, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=TIMEOUT)
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(map(str, cmd))} exited {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}", pytrace=False)
    return proc


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with kvmcore and the two built plugin wheels."""
    work = tmp_path_factory.mktemp("third_party")
    started = time.monotonic()
    good = copy_template(work / f"kvmcore-{GOOD}", GOOD)
    bad = copy_template(work / f"kvmcore-{BAD}", BAD, break_write=True)
    core = copy_core(work / "kvmcore-src")
    env_dir = work / "venv"
    run([sys.executable, "-m", "venv", env_dir], work)
    py = env_dir / "bin" / "python"
    pip = [py, "-m", "pip", "--disable-pip-version-check", "--no-input", "-q"]
    run([*pip, "wheel", "--no-deps", "-w", work / "wheels", good, bad], work)
    wheels = sorted((work / "wheels").glob("*.whl"))
    assert [w.name.split("-")[0] for w in wheels] == [f"kvmcore_{GOOD}", f"kvmcore_{BAD}"], wheels
    run([*pip, "install", core, *wheels, "pytest", "hypothesis"], work)
    print(f"\nvirtual environment ready in {time.monotonic() - started:.1f}s")
    return env_dir


def has_subcommand(venv: Path, name: str) -> bool:
    proc = run([venv / "bin" / "kvmcore", name, "--help"], venv.parent, check=False)
    return proc.returncode == 0


def test_conformance_suite_passes_for_the_installed_plugin(venv: Path) -> None:
    proc = run([venv / "bin" / "python", "-m", "pytest", "-p", "no:cacheprovider", "--kvmcore-conformance", GOOD, "-q"], venv.parent, check=False)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and "failed" not in proc.stdout and "error" not in proc.stdout


def test_template_tests_pass_in_the_copy(venv: Path) -> None:
    """The plugin's own test file runs the kit (SQLAlchemy style) and passes."""
    proc = run([venv / "bin" / "python", "-m", "pytest", "-p", "no:cacheprovider", "-q", "tests"], venv.parent / f"kvmcore-{GOOD}", check=False)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]


def test_broken_copy_fails_the_conformance_contract(venv: Path) -> None:
    proc = run([venv / "bin" / "python", "-m", "pytest", "-p", "no:cacheprovider", "--kvmcore-conformance", BAD, "-q", "-k", "contract"], venv.parent, check=False)
    assert proc.returncode == 1, proc.stdout[-4000:]
    assert f"arch plugin {BAD!r} breaks the fault contract: field 'write' must be bool, found int" in proc.stdout


def test_kvmcore_plugins_lists_it_and_refuses_the_broken_copy(venv: Path) -> None:
    if not has_subcommand(venv, "plugins"):
        pytest.skip("the `kvmcore plugins` subcommand is not available yet (kvmcore/cli.py)")
    proc = run([venv / "bin" / "kvmcore", "plugins", "--json"], venv.parent)
    rows = {row["name"]: row for row in json.loads(proc.stdout)}
    assert set(rows) == {GOOD, BAD}, rows  # a fresh environment: no in-tree arch
    good = rows[GOOD]
    assert good["error"] is None and good["distribution"] == f"kvmcore-{GOOD}" and good["version"] == "0.1.0"
    assert {"arch_info", "decode_fault", "encode_fault", "describe_syndrome"} <= set(good["hooks"])
    assert rows[BAD]["error"] == f"arch plugin {BAD!r} breaks the fault contract: field 'write' must be bool, found int"
    text = run([venv / "bin" / "kvmcore", "plugins"], venv.parent).stdout
    assert GOOD in text and f"FAILED TO LOAD: arch plugin {BAD!r} breaks the fault contract" in text


def test_kvmcore_decode_works_with_it(venv: Path) -> None:
    if not has_subcommand(venv, "decode"):
        pytest.skip("the `kvmcore decode` subcommand is not available yet (kvmcore/cli.py)")
    proc = run([venv / "bin" / "kvmcore", "decode", GOOD, "gpa=0x40001008", "status=0x1", "--json"], venv.parent)
    decoded = json.loads(proc.stdout)
    assert decoded["arch"] == GOOD and decoded["guest_fault"] is True
    assert (decoded["gfn"], decoded["write"], decoded["exec"], decoded["is_private"]) == (0x40001, True, False, False)
    assert decoded["access"] == "write"
    bad = run([venv / "bin" / "kvmcore", "decode", GOOD, "gpa=0x1000", "status=0x80"], venv.parent, check=False)
    assert bad.returncode != 0 and "reserved bits" in bad.stderr
