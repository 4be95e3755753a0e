"""The four distributions as a user gets them: sdists and wheels built from this checkout, checked
with ``twine check``, and ``kvmcore-arm64`` installed *by name* from the directory of built
artifacts into a fresh virtual environment (``pip install --no-index --find-links DIR
kvmcore-arm64``), where ``kvmcore plugins`` and ``kvmcore decode`` must work.

pip fetches build, twine, setuptools, pluggy and stevedore from PyPI once; the by-name install
itself uses no index.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
DISTS = {  # distribution -> its source directory in the checkout
    "kvmcore": ROOT,
    "kvmcore-arm64": ROOT / "plugins" / "arm64",
    "kvmcore-x86": ROOT / "plugins" / "x86",
    "kvmcore-riscv": ROOT / "plugins" / "riscv",
}
TIMEOUT = 600


def clean_env() -> dict[str, str]:
    drop = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTEST_ADDOPTS", "PYTEST_PLUGINS")
    return {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("KVMCORE_")}


def run(cmd: list[str | Path], cwd: Path) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=TIMEOUT)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(map(str, cmd))} exited {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}", pytrace=False)
    return proc


def project_version(pyproject: Path) -> str:
    match = re.search(r'^version = "([^"]+)"', pyproject.read_text(), re.M)
    assert match, f"{pyproject}: no version"
    return match.group(1)


def copy_sources(name: str, src: Path, dest: Path) -> Path:
    """The distribution's sources, so that building leaves nothing (egg-info, build/) in the tree."""
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", "dist", ".pytest_cache", ".hypothesis")
    if name == "kvmcore":
        dest.mkdir(parents=True)
        for item in ("pyproject.toml", "README.md"):
            shutil.copy2(src / item, dest / item)
        shutil.copytree(src / "kvmcore", dest / "kvmcore", ignore=ignore)
    else:
        shutil.copytree(src, dest, ignore=ignore)
    return dest


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the directory of built sdists and wheels, a tools venv with build and twine)."""
    work = tmp_path_factory.mktemp("packaging")
    tools = work / "tools"
    run([sys.executable, "-m", "venv", tools], work)
    pip = [tools / "bin" / "python", "-m", "pip", "--disable-pip-version-check", "--no-input", "-q"]
    run([*pip, "install", "build", "twine", "setuptools>=70.1"], work)
    dist = work / "dist"
    for name, src in DISTS.items():
        tree = copy_sources(name, src, work / "src" / name)
        run([tools / "bin" / "python", "-m", "build", "--no-isolation", "--sdist", "--wheel", "--outdir", dist, tree], work)
    return dist, tools


def test_versions_are_in_lockstep() -> None:
    versions = {name: project_version(src / "pyproject.toml") for name, src in DISTS.items()}
    assert len(set(versions.values())) == 1, versions
    core = versions["kvmcore"]
    for name in DISTS:
        if name != "kvmcore":
            assert f'"kvmcore=={core}"' in (DISTS[name] / "pyproject.toml").read_text(), f"{name} must pin kvmcore=={core}"


def test_every_distribution_builds_an_sdist_and_a_wheel(built: tuple[Path, Path]) -> None:
    dist, _ = built
    version = project_version(ROOT / "pyproject.toml")
    names = sorted(p.name for p in dist.iterdir())
    for name in DISTS:
        stem = name.replace("-", "_")
        assert f"{stem}-{version}.tar.gz" in names, names
        assert f"{stem}-{version}-py3-none-any.whl" in names, names


def test_twine_check_passes(built: tuple[Path, Path]) -> None:
    dist, tools = built
    proc = run([tools / "bin" / "twine", "check", "--strict", *sorted(dist.iterdir())], dist)
    assert proc.stdout.count("PASSED") == 2 * len(DISTS), proc.stdout


def test_core_artifacts_hold_every_module_of_the_tree(built: tuple[Path, Path]) -> None:
    """Every .py under kvmcore/ (a new subpackage included) and the package data are shipped."""
    dist, _ = built
    version = project_version(ROOT / "pyproject.toml")
    expected = {p.relative_to(ROOT).as_posix() for p in (ROOT / "kvmcore").rglob("*") if p.suffix in (".py", ".toml") or p.name == "py.typed"}
    expected = {p for p in expected if "__pycache__" not in p}
    with zipfile.ZipFile(dist / f"kvmcore-{version}-py3-none-any.whl") as whl:
        in_wheel = {n for n in whl.namelist() if n.startswith("kvmcore/")}
    assert expected <= in_wheel, sorted(expected - in_wheel)
    with tarfile.open(dist / f"kvmcore-{version}.tar.gz") as sdist:
        in_sdist = {n.split("/", 1)[1] for n in sdist.getnames() if "/" in n}
    assert expected <= in_sdist, sorted(expected - in_sdist)


def test_install_arm64_by_name_from_the_wheel_directory(built: tuple[Path, Path], tmp_path: Path) -> None:
    dist, tools = built
    wheelhouse = tmp_path / "wheelhouse"
    shutil.copytree(dist, wheelhouse)
    # the core's own dependencies, so that the by-name install needs no index
    run([tools / "bin" / "python", "-m", "pip", "-q", "download", "--dest", wheelhouse, "pluggy>=1.5", "stevedore"], tmp_path)
    env = tmp_path / "venv"
    run([sys.executable, "-m", "venv", env], tmp_path)
    run([env / "bin" / "python", "-m", "pip", "-q", "--disable-pip-version-check", "install", "--no-index", "--find-links", wheelhouse, "kvmcore-arm64"], tmp_path)

    rows = json.loads(run([env / "bin" / "kvmcore", "plugins", "--json"], tmp_path).stdout)
    assert [(r["name"], r["distribution"]) for r in rows] == [("arm64", "kvmcore-arm64")], rows

    # ESR_EL2 0x93C08007, worked by hand (Arm ARM D24.2.43): EC = bits[31:26] = 0b100100 = 0x24
    # (data abort from a lower EL); ISS.ISV (bit 24) = 1, SAS (23:22) = 0b11 -> 8 bytes; WnR (6) = 0
    # (a read); DFSC (5:0) = 0b000111 (translation fault, level 3). HPFAR_EL2.FIPA (bits 43:4) holds
    # IPA[51:12]: 0x400010 >> 4 = 0x40001, so the IPA is 0x40001000 and with FAR[11:0] = 0x008 the
    # faulting address is 0x40001008; gfn 0x40001 with 4K pages.
    out = json.loads(run([env / "bin" / "kvmcore", "decode", "arm64", "esr=0x93C08007", "far=0x40001008", "hpfar=0x400010", "--json"], tmp_path).stdout)
    assert (out["ec"], out["fsc"], out["wnr"], out["access_size"]) == (0x24, 0x07, False, 8)
    assert (out["gpa"], out["gfn"], out["write"], out["exec"]) == (0x40001008, 0x40001, False, False)
