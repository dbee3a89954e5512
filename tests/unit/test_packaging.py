"""The distribution installs one import package, `slmflow`, never the project's folders."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

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
