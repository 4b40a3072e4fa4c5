"""The installed wheel holds every sub-package (package_dir maps renderers/, fitting/, networks/)."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                             "-w", str(out), str(ROOT)], capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        pytest.fail(f"building the wheel failed:\n{result.stderr[-3000:]}")
    return next(out.glob("diffface-*.whl"))


def test_wheel_contains_subpackages_and_console_script(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    for sub in ("renderers", "fitting", "networks", "cli", "loaders"):
        assert f"diffface/{sub}/__init__.py" in names, sub
    assert not any(n.startswith(("renderers/", "fitting/", "networks/", "tests/")) for n in names)
    shipped = [f"diffface/networks/pretrained/{p.name}" for p in (ROOT / "networks/pretrained").glob("*.*")]
    assert shipped and set(shipped) <= set(names)  # the demo's starting network and its provenance
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "diffface = diffface.cli.main:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_subpackages_import_from_the_installed_wheel(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, timeout=300)
    code = ("import diffface, diffface.renderers, diffface.fitting, diffface.networks, diffface.loaders;"
            "print(diffface.renderers.__file__)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                            env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}, timeout=300)
    assert result.returncode == 0, result.stderr
    assert str(target) in result.stdout
