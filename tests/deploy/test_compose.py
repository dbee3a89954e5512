"""deploy/compose.yaml, deploy/Procfile, deploy/.env.example and deploy/Dockerfile, checked offline.

The compose file must pass the compose specification (the `compose-spec` package: its strict parser, where an
unknown key is an error, then the pydantic model generated from the specification's JSON Schema), and the
three files must agree: the same processes, every variable defined once in .env.example, every slmflow
setting a real one, every slmflow command one the CLI parses.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml
from compose_spec import ComposeSpecification, PyCompose, parse_duration
from honcho.environ import parse_procfile

from slmflow.cli import app
from slmflow.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
PROCFILE = DEPLOY / "Procfile"
ENV_EXAMPLE = DEPLOY / ".env.example"
DOCKERFILE = DEPLOY / "Dockerfile"

SLMFLOW_PROCESSES = ("jobs-worker", "tools-worker", "metrics")
"""The processes that run slmflow itself, the same in compose.yaml and the Procfile."""
TOPOLOGY = ("redis", "postgres", "model", *SLMFLOW_PROCESSES)
"""What both compose.yaml and the Procfile run (compose adds the GPU model, Phoenix and a collector)."""
EXPECTED_COMMANDS = {
    "jobs-worker": ["worker", "--queues", "slmflow.jobs", "--concurrency", "200"],
    "tools-worker": ["worker", "--queues", "slmflow.tools", "--concurrency", "4"],
    "metrics": ["metrics", "--port", "9100"],
}
"""The interface's commands (the lead's /tmp/deploy_interface.md): each must be part of the real one."""

# `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?error}`, `${VAR?error}` and `$VAR`; `$$` is a `$`.
_VARIABLE = re.compile(r"\$(?:\{(?P<braced>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}|(?P<bare>\w+)|(?P<dollar>\$))")
_ASSIGNMENT = re.compile(r"^([A-Za-z_]\w*)=(.*)$", re.MULTILINE)
_COMMENTED_SETTING = re.compile(r"^#\s*(SLMFLOW_\w+)=", re.MULTILINE)


def env_example() -> dict[str, str]:
    """deploy/.env.example's KEY=value lines, empty values included (honcho's parser drops those)."""
    return dict(_ASSIGNMENT.findall(ENV_EXAMPLE.read_text()))


def interpolate(text: str, env: dict[str, str]) -> str:
    """`text` with its variables replaced as compose does; an undefined variable without a default fails."""

    def replace(match: re.Match[str]) -> str:
        if match["dollar"]:
            return "$"
        name = match["braced"] or match["bare"]
        value, op = env.get(name), match["op"] or ""
        if op.startswith(":") and not value:
            value = None
        if value is None and op.endswith("-"):
            return match["arg"]
        assert value is not None, f"{name} is used but not defined in deploy/.env.example"
        return value

    return _VARIABLE.sub(replace, text)


def variables(text: str) -> set[str]:
    """The variable names `text` uses (`$$NAME` is a literal `$NAME` and uses none)."""
    return {m["braced"] or m["bare"] for m in _VARIABLE.finditer(text) if not m["dollar"]}


def strings(node: Any) -> list[str]:
    """Every string in a loaded YAML document (values, not comments)."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for k, v in node.items() for s in (*strings(k), *strings(v))]
    if isinstance(node, list):
        return [s for item in node for s in strings(item)]
    return []


def interpolated(node: Any, env: dict[str, str]) -> Any:
    """A loaded YAML document with the variables of its values replaced, as compose does after parsing."""
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, dict):
        return {key: interpolated(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolated(item, env) for item in node]
    return node


def compose(text: str | None = None) -> dict[str, Any]:
    """compose.yaml (its `<<` merges resolved, its variables from .env.example) through the compose
    specification's strict parser, then its pydantic model."""
    document = interpolated(yaml.safe_load(text or COMPOSE.read_text()), env_example())
    parsed = PyCompose.from_json(json.dumps(document))
    parsed.validate()  # every volume, network, config and secret a service names is defined
    ComposeSpecification.model_validate(parsed.to_dict())
    return parsed.to_dict()


def procfile() -> dict[str, str]:
    """The Procfile's processes, as honcho reads them."""
    return dict(parse_procfile(PROCFILE.read_text()).processes)


def procfile_argv(name: str) -> tuple[dict[str, str], list[str]]:
    """A Procfile process's environment assignments and the arguments it gives `slmflow`, interpolated."""
    words = shlex.split(interpolate(procfile()[name], env_example()))
    assignments = {}
    while words and re.match(r"^\w+=", words[0]):
        key, _, value = words.pop(0).partition("=")
        assignments[key] = value
    assert "slmflow" in words, f"process {name!r} does not run slmflow: {words}"
    return assignments, words[words.index("slmflow") + 1 :]


def compose_argv(name: str) -> list[str]:
    """The arguments a compose service gives the image's entrypoint, `slmflow`."""
    command = compose()["services"][name]["command"]
    return command if isinstance(command, list) else shlex.split(command)


def probe(service: dict[str, Any]) -> str:
    """A service's healthcheck command as one line (the parser keeps a CMD-SHELL test as its string)."""
    test = service["healthcheck"]["test"]
    return test if isinstance(test, str) else " ".join(test)


def parse_cli(argv: list[str]) -> tuple[str, dict[str, Any]]:
    """Parse `slmflow ARGV` as the CLI does when a user runs it, without running it: the command's name and
    its parameters. A usage error (unknown command or option, bad value) is an AssertionError."""
    root = typer.main.get_command(app)
    try:
        context = root.make_context("slmflow", list(argv))
        # click keeps the command's name apart from its arguments (`protected_args`, deprecated as public).
        name, command, rest = root.resolve_command(context, [*context._protected_args, *context.args])
        assert command is not None and name is not None
        return name, command.make_context(name, rest, parent=context).params
    except Exception as exc:  # typer's vendored click: its UsageError is not click's
        raise AssertionError(f"`slmflow {shlex.join(argv)}` does not parse: {exc}") from exc


# -- the compose specification ---------------------------------------------------------------------------------


def test_compose_file_passes_the_compose_specification() -> None:
    spec = compose()
    assert "version" not in yaml.safe_load(COMPOSE.read_text()), "the compose specification has no `version:`"
    assert set(TOPOLOGY) | {"model-gpu", "phoenix", "otel-collector"} <= set(spec["services"])


@pytest.mark.parametrize(
    ("where", "typo"),
    [
        ("    restart: unless-stopped\n", "    restrat: unless-stopped\n"),
        ("      interval: 5s\n", "      intreval: 5s\n"),
    ],
)
def test_a_misspelt_compose_key_fails_validation(where: str, typo: str) -> None:
    text = COMPOSE.read_text()
    assert where in text
    with pytest.raises(ValueError, match=typo.strip().split(":")[0]):
        compose(text.replace(where, typo, 1))


def test_optional_services_are_behind_profiles() -> None:
    services = compose()["services"]
    assert services["model"].get("profiles") == ["cpu"]
    assert services["model-gpu"].get("profiles") == ["gpu"]
    assert services["otel-collector"].get("profiles") == ["otel"]
    assert "cpu" in env_example()["COMPOSE_PROFILES"].split(","), "the CPU model is the default"
    devices = services["model-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    assert "model" in services["model-gpu"]["networks"]["default"]["aliases"], "workers reach either as `model`"
    assert "scripted_model" not in COMPOSE.read_text(), "compose runs vLLM, never the CI stand-in"


# -- compose.yaml, the Procfile and .env.example agree -------------------------------------------------------


def test_procfile_runs_the_same_topology_as_compose() -> None:
    assert tuple(procfile()) == TOPOLOGY
    services = compose()["services"]
    built = {name for name, service in services.items() if "build" in service}
    assert built == set(SLMFLOW_PROCESSES), "every slmflow process is built from deploy/Dockerfile"


def test_every_variable_used_is_defined_in_env_example() -> None:
    defined = set(env_example())
    used = {
        "compose.yaml": {v for s in strings(yaml.safe_load(COMPOSE.read_text())) for v in variables(s)},
        "Procfile": {v for command in procfile().values() for v in variables(command)},
    }
    for where, names in used.items():
        assert names, f"{where} uses no variable: the check reads nothing"
        assert names <= defined, f"{where} uses {sorted(names - defined)}, not in deploy/.env.example"


def test_every_slmflow_key_of_env_example_is_a_setting() -> None:
    text = ENV_EXAMPLE.read_text()
    keys = {k for k in env_example() if k.startswith("SLMFLOW_")} | set(_COMMENTED_SETTING.findall(text))
    settings = {f"SLMFLOW_{field.upper()}" for field in Settings.model_fields}
    assert keys - settings == set(), f"not slmflow settings: {sorted(keys - settings)}"
    assert {"SLMFLOW_DRAIN_S", "SLMFLOW_HEALTH_PORT", "SLMFLOW_SLM_API_KEY", "SLMFLOW_LLM_API_KEY"} <= keys


def test_the_settings_a_container_gets_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """env_file, then the service's `environment`, as compose merges them: slmflow's settings accept them."""
    for name in SLMFLOW_PROCESSES:
        service = compose()["services"][name]
        assert service["env_file"] in (".env", [".env"], [{"path": ".env", "required": True}])
        environment = {**env_example(), **service["environment"]}
        for key in [k for k in os.environ if k.startswith("SLMFLOW_")]:
            monkeypatch.delenv(key)
        for key, value in environment.items():
            monkeypatch.setenv(key, str(value))
        settings = Settings()
        assert settings.redis_url.startswith("redis://:") and settings.redis_url.endswith("@redis:6379/0")
        assert settings.checkpoint_url.startswith("postgresql://") and "@postgres:5432/" in settings.checkpoint_url
        assert settings.slm_base_url == "http://model:8000/v1"
        assert settings.project == Path("/app")


def test_secrets_are_placeholders_and_never_literal_in_compose() -> None:
    env, text = env_example(), COMPOSE.read_text()
    for secret in ("REDIS_PASSWORD", "POSTGRES_PASSWORD", "SLMFLOW_SLM_API_KEY", "SLMFLOW_LLM_API_KEY", "HF_TOKEN"):
        assert secret in env, f"{secret} has no placeholder in deploy/.env.example"
    for placeholder in {env["REDIS_PASSWORD"], env["POSTGRES_PASSWORD"], env["SLMFLOW_LLM_API_KEY"]}:
        assert placeholder not in text, f"compose.yaml holds the literal {placeholder!r}: use its variable"


# -- the slmflow processes -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SLMFLOW_PROCESSES)
def test_compose_command_parses_with_the_slmflow_cli(name: str) -> None:
    argv = compose_argv(name)
    command, params = parse_cli(argv)
    assert command == EXPECTED_COMMANDS[name][0]
    assert shlex.join(EXPECTED_COMMANDS[name][1:]) in shlex.join(argv[1:])
    assert params


@pytest.mark.parametrize("name", SLMFLOW_PROCESSES)
def test_procfile_command_parses_and_matches_compose(name: str) -> None:
    _, argv = procfile_argv(name)
    command, params = parse_cli(argv)
    _, in_compose = parse_cli(compose_argv(name))
    assert command == EXPECTED_COMMANDS[name][0]
    # The same process, but on loopback: only where it listens may differ.
    differs = {key for key in params if params[key] != in_compose[key]}
    assert differs <= {"host", "port"}, f"{name}: the Procfile and compose.yaml differ in {sorted(differs)}"


def test_a_bad_command_fails_to_parse() -> None:
    with pytest.raises(AssertionError, match="does not parse"):
        parse_cli(["worker", "--queues", "slmflow.jobs", "--concurrency", "two hundred"])
    with pytest.raises(AssertionError, match="does not parse"):
        parse_cli(["wroker"])


def test_workers_wait_for_healthy_redis_postgres_and_model() -> None:
    services = compose()["services"]
    for name in ("jobs-worker", "tools-worker"):
        depends_on = services[name]["depends_on"]
        for dependency in ("redis", "postgres", "model", "model-gpu"):
            assert depends_on[dependency]["condition"] == "service_healthy", f"{name} -> {dependency}"
            assert "healthcheck" in services[dependency], f"{dependency} has no healthcheck to wait for"
        assert depends_on["model"].get("required") is False and depends_on["model-gpu"].get("required") is False
    assert "redis-cli ping" in probe(services["redis"])
    assert "pg_isready" in probe(services["postgres"])
    for model in ("model", "model-gpu"):
        assert "localhost:8000/health" in probe(services[model])


def test_worker_stop_grace_period_exceeds_the_drain() -> None:
    drain_s = float(env_example()["SLMFLOW_DRAIN_S"])
    for name in ("jobs-worker", "tools-worker"):
        grace_s = parse_duration(compose()["services"][name]["stop_grace_period"])
        assert grace_s >= drain_s + 10, f"{name}: {grace_s} s of grace leaves no time to hand back after the drain"


def test_worker_healthchecks_probe_livez_on_the_health_port() -> None:
    port = env_example()["SLMFLOW_HEALTH_PORT"]
    for name in ("jobs-worker", "tools-worker"):
        command = probe(compose()["services"][name])
        assert f"http://localhost:{port}/livez" in command and "urllib" in command, command
    ports = {procfile_argv(name)[0].get("SLMFLOW_HEALTH_PORT") for name in ("jobs-worker", "tools-worker")}
    assert None not in ports and len(ports) == 2, "on one machine each worker needs its own health port"
    assert "/readyz" in probe(compose()["services"]["metrics"])


def test_redis_persists_in_both_topologies() -> None:
    assert "--appendonly yes" in " ".join(compose()["services"]["redis"]["command"])
    assert "--appendonly yes" in procfile()["redis"]
    assert compose()["services"]["redis"]["volumes"] and compose()["services"]["postgres"]["volumes"]


# -- the image -----------------------------------------------------------------------------------------------


def test_dockerfile_builds_the_one_image_as_non_root() -> None:
    text = DOCKERFILE.read_text()
    final = text.rsplit("\nFROM ", 1)[1]
    assert final.startswith("python:3.11-slim")
    assert re.search(r"^USER (?!root|0\b)\S+", final, re.MULTILINE), "the image must not run as root"
    assert 'ENTRYPOINT ["slmflow"]' in final and "SLMFLOW_PROJECT=/app" in final
    assert not re.search(r"\[(local|train)", text), "no model server or training in the workers' image"
    services = compose()["services"]
    for name in SLMFLOW_PROCESSES:
        assert services[name]["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}


def test_dockerfile_copies_what_exists_and_is_sent() -> None:
    ignore = [line for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines() if line.strip()]
    sent = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    sources = [s for line in DOCKERFILE.read_text().splitlines() if line.startswith("COPY ") and "--from" not in line
               for s in line.split()[1:-1]]  # fmt: skip
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: no such file in the repository"
        assert source.rstrip("/") in sent, f"COPY {source}: excluded by Dockerfile.dockerignore"
    for project in ("agents/", "tools/", "graphs/", "workers/", "pyproject.toml"):
        assert project in sources
