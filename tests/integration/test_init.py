"""`slmflow init`: a new project that lists its graph, runs it, passes its own test and renders its deploy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from slmflow.testing import Reply, ScriptedServer

SLMFLOW = [sys.executable, "-m", "slmflow"]


def run(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_a_new_project_lists_runs_tests_and_deploys_its_graph(tmp_path: Path) -> None:
    project = tmp_path / "shop-feedback"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLMFLOW_") and k != "PYTHONPATH"}
    made = run([*SLMFLOW, "init", str(project), "--image", "registry.example.com/shop/feedback"], tmp_path, env)
    assert made.returncode == 0, made.stderr
    for part in ("agents/feedback.py", "tools/notes.py", "graphs/feedback.py", "workers/__init__.py",
                 "pyproject.toml", "tests/test_feedback.py", "deploy/kubernetes/overlays/production"):  # fmt: skip
        assert (project / part).exists(), part
    assert "{{" not in (project / "pyproject.toml").read_text()

    listed = run([*SLMFLOW, "graphs", "--json"], project, env)
    assert listed.returncode == 0, listed.stderr
    assert [g["name"] for g in json.loads(listed.stdout)] == ["feedback"]

    with ScriptedServer({"slm": lambda body: Reply(text="complaint", logprobs=[-0.02])}) as server:
        scripted = {**env, "SLMFLOW_SLM_BASE_URL": server.base_url, "SLMFLOW_SLM_MODEL": "slm"}
        done = run([*SLMFLOW, "run", "feedback", "--input", "examples/praise.json", "--json"], project, scripted)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "succeeded"
    assert result["output"]["category"] == "complaint" and result["output"]["filed"]["filed"] == "complaint"

    tested = run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], project, env)
    assert tested.returncode == 0, tested.stdout[-3000:]
    assert "2 passed" in tested.stdout

    rendered = run(["kubectl", "kustomize", "deploy/kubernetes/overlays/production"], project, env, timeout=60)
    assert rendered.returncode == 0, rendered.stderr
    assert "image: registry.example.com/shop/feedback:0.1.0" in rendered.stdout
    assert "namespace: shop-feedback" in rendered.stdout
    # KEDA reads the exporter across namespaces: the url follows the project's namespace.
    assert "url: http://slmflow-metrics.shop-feedback.svc:9100/metrics.json" in rendered.stdout


def test_init_refuses_a_directory_in_use_and_a_bad_name(tmp_path: Path) -> None:
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "notes.txt").write_text("mine")
    refused = run([*SLMFLOW, "init", str(tmp_path / "used")], tmp_path, dict(os.environ))
    assert refused.returncode != 0 and "not an empty directory" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert (tmp_path / "used" / "notes.txt").read_text() == "mine" and len(list((tmp_path / "used").iterdir())) == 1
    bad = run([*SLMFLOW, "init", str(tmp_path / "new"), "--name", "My Project"], tmp_path, dict(os.environ))
    assert bad.returncode != 0 and "project name 'My Project'" in bad.stderr
    assert not (tmp_path / "new").exists()
