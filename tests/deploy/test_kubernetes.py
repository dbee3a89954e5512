"""The Kubernetes manifests: the base shipped in `slmflow/templates/kubernetes/` and `deploy/kubernetes/`'s
overlays, each rendered with `kubectl kustomize`, then checked offline: every object against its schema
(Kubernetes' own, KEDA's), then against slmflow itself (its settings, its CLI, its health port)."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import typer.exceptions
import typer.main
import yaml
from cloudcoil.models.keda import v1alpha1 as keda

from slmflow.cli import COMMANDS, LazyGroup, app
from slmflow.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_BASE = "slmflow/templates/kubernetes"
DEPLOY = "deploy/kubernetes"
OVERLAYS = sorted(
    p.parent.relative_to(ROOT).as_posix() for p in (ROOT / DEPLOY / "overlays").glob("*/kustomization.yaml")
)
KUSTOMIZATIONS = [PACKAGE_BASE, f"{DEPLOY}/base", *OVERLAYS]
KUBERNETES_VERSION = "1.30"  # the oldest Kubernetes the manifests promise to run on
KUBECTL_MINIMUM = (1, 27)  # kustomize v5 inside kubectl: components, replacements, labels
KEDA_MODELS = {"ScaledObject": keda.ScaledObject, "TriggerAuthentication": keda.TriggerAuthentication}
SECRET_SETTINGS = {"SLMFLOW_REDIS_URL", "SLMFLOW_CHECKPOINT_URL", "SLMFLOW_SLM_API_KEY", "SLMFLOW_LLM_API_KEY"}
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}

Obj = dict[str, Any]


# --- rendering ---------------------------------------------------------------------------------------------


def kubectl_version() -> tuple[int, int]:
    """kubectl's client version; the test run fails (never skips) without a recent enough kubectl."""
    if shutil.which("kubectl") is None:
        pytest.fail("kubectl is not on PATH: install kubectl >= 1.27 (https://kubernetes.io/docs/tasks/tools/)")
    done = subprocess.run(["kubectl", "version", "--client", "-o", "json"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    client = json.loads(done.stdout)["clientVersion"]
    return int(client["major"]), int(re.sub(r"\D.*", "", client["minor"]))  # "32+" on some builds


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the manifests, with every git-ignored `secrets.env` made from its committed example (a
    developer's real one is never read)."""
    version = kubectl_version()
    if version < KUBECTL_MINIMUM:
        pytest.fail(f"kubectl {version[0]}.{version[1]} is older than 1.27: install a newer kubectl")
    copy = tmp_path_factory.mktemp("manifests")
    shutil.copytree(ROOT / PACKAGE_BASE, copy / PACKAGE_BASE)
    shutil.copytree(ROOT / DEPLOY, copy / DEPLOY, ignore=shutil.ignore_patterns("secrets.env"))
    for example in (copy / DEPLOY).rglob("secrets.env.example"):
        shutil.copyfile(example, example.with_suffix(""))
    return copy


def kustomize(directory: Path) -> list[Obj]:
    done = subprocess.run(["kubectl", "kustomize", str(directory)], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        pytest.fail(f"kubectl kustomize {directory} failed:\n{done.stderr}")
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.fixture(scope="module")
def rendered(tree: Path) -> dict[str, list[Obj]]:
    return {name: kustomize(tree / name) for name in KUSTOMIZATIONS}


def kustomization(name: str) -> Obj:
    loaded: Obj = yaml.safe_load((ROOT / name / "kustomization.yaml").read_text())
    return loaded


# --- reading rendered objects ------------------------------------------------------------------------------


def of_kind(objs: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objs if o["kind"] == kind]


def named(objs: list[Obj], kind: str, name: str) -> Obj | None:
    return next((o for o in of_kind(objs, kind) if o["metadata"]["name"] == name), None)


def pod_templates(objs: list[Obj]) -> Iterator[tuple[Obj, Obj]]:
    """(workload, pod template) of every workload."""
    for o in objs:
        if o["kind"] in WORKLOADS:
            yield o, o["spec"]["template"]


def containers(pod_spec: Obj) -> list[Obj]:
    return [*pod_spec.get("initContainers", []), *pod_spec["containers"]]


def image_repo(image: str) -> str:
    """`ghcr.io/x/slmflow` of `ghcr.io/x/slmflow:0.1.0` (a registry's port is not a tag)."""
    repo = image.split("@")[0]
    return repo.rsplit(":", 1)[0] if ":" in repo.rsplit("/", 1)[-1] else repo


def slmflow_repo(name: str) -> str:
    """The repository the kustomization gives the logical image `slmflow`."""
    for image in kustomization(name).get("images", []):
        if image["name"] == "slmflow":
            return str(image.get("newName", "slmflow"))
    return "slmflow"


def slmflow_containers(name: str, objs: list[Obj]) -> Iterator[tuple[Obj, Obj, bool]]:
    """(workload, container, is_init) of every container running slmflow's image."""
    repo = slmflow_repo(name)
    for workload, template in pod_templates(objs):
        for c in template["spec"].get("initContainers", []):
            if image_repo(c["image"]) == repo:
                yield workload, c, True
        for c in template["spec"]["containers"]:
            if image_repo(c["image"]) == repo:
                yield workload, c, False


def worker_queues(container: Obj) -> list[str]:
    command = container.get("command", [])
    if command[:2] != ["slmflow", "worker"]:
        return []
    return command[command.index("--queues") + 1].split(",") if "--queues" in command else ["slmflow.jobs"]


def workers(name: str, objs: list[Obj], queue: str) -> list[tuple[Obj, Obj]]:
    """(Deployment, container) of the workers consuming `queue`."""
    return [(w, c) for w, c, init in slmflow_containers(name, objs) if not init and queue in worker_queues(c)]


def option(command: list[str], flag: str) -> str:
    assert flag in command, f"{flag} missing from {command}"
    return command[command.index(flag) + 1]


def scaled_object(objs: list[Obj], target: str) -> Obj:
    """The one ScaledObject scaling the workload named `target`."""
    [scaled] = [s for s in of_kind(objs, "ScaledObject") if s["spec"]["scaleTargetRef"]["name"] == target]
    return scaled


def settings_data(objs: list[Obj]) -> dict[str, str]:
    configmap = named(objs, "ConfigMap", "slmflow-settings")
    assert configmap is not None, "no ConfigMap slmflow-settings"
    return dict(configmap.get("data", {}))


def secret_data(secret: Obj) -> dict[str, str]:
    decoded = {k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()}
    return {**decoded, **secret.get("stringData", {})}


def selects(selector: Obj | None, labels: dict[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels and matchExpressions) applied to `labels`."""
    if selector is None:
        return False
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        held = {"In": labels.get(key) in values, "NotIn": labels.get(key) not in values,
                "Exists": key in labels, "DoesNotExist": key not in labels}[op]  # fmt: skip
        if not held:
            return False
    return True


def pods_selected(objs: list[Obj], namespace: str | None, selector: Obj) -> list[Obj]:
    """Pod templates in `namespace` whose labels `selector` selects."""
    return [
        template
        for workload, template in pod_templates(objs)
        if workload["metadata"].get("namespace") == namespace and selects(selector, template["metadata"]["labels"])
    ]


def settings_default(field: str, fallback: float) -> float:
    info = Settings.model_fields.get(field)
    return float(info.default) if info is not None else fallback


# --- rendering and schemas ---------------------------------------------------------------------------------


def test_kubectl_is_recent_enough_for_these_kustomizations() -> None:
    assert kubectl_version() >= KUBECTL_MINIMUM


def test_the_package_base_renders_alone_as_slmflow_init_copies_it(
    tmp_path: Path, rendered: dict[str, list[Obj]]
) -> None:
    shutil.copytree(ROOT / PACKAGE_BASE, tmp_path / "kubernetes")
    assert kustomize(tmp_path / "kubernetes") == rendered[PACKAGE_BASE]


def test_the_deploy_base_is_exactly_the_package_base(rendered: dict[str, list[Obj]]) -> None:
    assert rendered[f"{DEPLOY}/base"] == rendered[PACKAGE_BASE]


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_every_kubernetes_object_is_valid_for_kubernetes_1_30(name: str, rendered: dict[str, list[Obj]]) -> None:
    errors = []
    for o in rendered[name]:
        if o["apiVersion"].startswith("keda.sh/"):
            continue
        where = f"{o['kind']}/{o['metadata']['name']}"
        try:
            kubernetes_validate.validate(o, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{where} at {exc.json_path}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError:
            errors.append(f"{where}: {o['apiVersion']} is no Kubernetes {KUBERNETES_VERSION} kind")
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_every_keda_object_is_valid_for_keda(name: str, rendered: dict[str, list[Obj]]) -> None:
    objs = [o for o in rendered[name] if o["apiVersion"].startswith("keda.sh/")]
    assert {o["kind"] for o in objs} >= {"ScaledObject", "TriggerAuthentication"}
    for o in objs:
        assert o["kind"] in KEDA_MODELS, f"no KEDA model for {o['kind']}"
        # Unknown fields fail: KEDA ignores them, so a misspelt field would silently do nothing.
        KEDA_MODELS[o["kind"]].model_validate(o, strict=True, extra="forbid")


# --- slmflow's settings, CLI and health port --------------------------------------------------------------


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_every_configmap_key_is_a_setting_or_an_otel_variable(name: str, rendered: dict[str, list[Obj]]) -> None:
    settings = {"SLMFLOW_" + field.upper() for field in Settings.model_fields}
    for configmap in of_kind(rendered[name], "ConfigMap"):
        keys = set(configmap.get("data", {}))
        unknown = {k for k in keys if k not in settings and not k.startswith("OTEL_")}
        assert not unknown, f"{configmap['metadata']['name']}: not slmflow settings: {sorted(unknown)}"
        assert not keys & SECRET_SETTINGS, "secrets belong in slmflow-secrets, not a ConfigMap"


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_the_settings_configmap_holds_valid_settings(
    name: str, rendered: dict[str, list[Obj]], monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in [k for k in os.environ if k.startswith("SLMFLOW_")]:
        monkeypatch.delenv(key)
    for key, value in settings_data(rendered[name]).items():
        monkeypatch.setenv(key, value)
    Settings()  # raises on a value of the wrong type or out of range


def parse_slmflow_command(argv: list[str]) -> None:
    """Parse `argv` as the `slmflow` console script would, without running the command."""
    assert argv[0] == "slmflow" and argv[1] in COMMANDS, f"not a slmflow command: {argv}"
    group = typer.main.get_command(app)
    assert isinstance(group, LazyGroup)
    command = group.load(argv[1])
    with command.make_context(argv[1], list(argv[2:])):
        pass


def test_the_command_parser_rejects_what_slmflow_would() -> None:
    with pytest.raises(typer.exceptions.TyperException, match="--slots"):  # a click UsageError, in typer's copy
        parse_slmflow_command(["slmflow", "worker", "--queues", "slmflow.jobs", "--slots", "200"])


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_every_slmflow_container_runs_a_command_slmflow_parses(name: str, rendered: dict[str, list[Obj]]) -> None:
    parsed = 0
    for workload, container, init in slmflow_containers(name, rendered[name]):
        command = [*container.get("command", []), *container.get("args", [])]
        if init and command[:1] != ["slmflow"]:
            continue  # a helper (copying adapters), not a slmflow process
        assert command[:1] == ["slmflow"], f"{workload['metadata']['name']} runs {command}"
        parse_slmflow_command(command)
        parsed += 1
    assert parsed >= 3  # jobs workers, tools workers, the exporter


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_workers_probe_readyz_and_livez_on_the_health_port(name: str, rendered: dict[str, list[Obj]]) -> None:
    objs = rendered[name]
    port = int(settings_default("health_port", 8081))
    assert int(settings_data(objs).get("SLMFLOW_HEALTH_PORT", port)) == port
    checked = workers(name, objs, "slmflow.jobs") + workers(name, objs, "slmflow.tools")
    assert len(checked) == 2
    for workload, c in checked:
        where = workload["metadata"]["name"]
        assert {"name": "health", "containerPort": port, "protocol": "TCP"} in c.get("ports", []), where
        for probe, path in [("startupProbe", "/readyz"), ("readinessProbe", "/readyz"), ("livenessProbe", "/livez")]:
            assert c[probe]["httpGet"] in ({"path": path, "port": "health"}, {"path": path, "port": port}), where
        annotations = workload["spec"]["template"]["metadata"].get("annotations", {})
        assert int(annotations.get("prometheus.io/port", port)) == port, where


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_workers_get_longer_to_stop_than_they_take_to_drain(name: str, rendered: dict[str, list[Obj]]) -> None:
    objs, data = rendered[name], settings_data(rendered[name])
    drain = float(data.get("SLMFLOW_DRAIN_S", settings_default("drain_s", 25)))
    tool_limit = float(data.get("SLMFLOW_TOOL_TIME_LIMIT_S", settings_default("tool_time_limit_s", 300)))
    for queue, needed in [("slmflow.jobs", drain + 15), ("slmflow.tools", tool_limit)]:  # 15 s: the hand-back
        [(deployment, _)] = workers(name, objs, queue)
        grace = deployment["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30)
        assert grace > needed, f"{deployment['metadata']['name']}: {grace} s to stop, needs over {needed}"


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_containers_are_hardened_and_sized(name: str, rendered: dict[str, list[Obj]]) -> None:
    slmflow_images = {id(c) for _, c, _ in slmflow_containers(name, rendered[name])}
    for workload, template in pod_templates(rendered[name]):
        spec = template["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True, workload["metadata"]["name"]
        for c in containers(spec):
            where = f"{workload['metadata']['name']}/{c['name']}"
            assert {"cpu", "memory"} <= set(c["resources"]["requests"]) & set(c["resources"]["limits"]), where
            security = c["securityContext"]
            assert security["allowPrivilegeEscalation"] is False and security["capabilities"]["drop"] == ["ALL"], where
            if id(c) in slmflow_images:
                assert security["readOnlyRootFilesystem"] is True, where


# --- objects that refer to one another ---------------------------------------------------------------------


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_every_selector_selects_the_pods_it_is_for(name: str, rendered: dict[str, list[Obj]]) -> None:
    objs = rendered[name]
    for workload, template in pod_templates(objs):
        assert selects(workload["spec"]["selector"], template["metadata"]["labels"]), workload["metadata"]["name"]
    for o in objs:
        where, ns = f"{o['kind']}/{o['metadata']['name']}", o["metadata"].get("namespace")
        if o["kind"] == "Service":
            pods = pods_selected(objs, ns, {"matchLabels": o["spec"]["selector"]})
            named_ports = {p["name"] for t in pods for c in t["spec"]["containers"] for p in c.get("ports", [])}
            assert pods, where
            assert {p["targetPort"] for p in o["spec"]["ports"] if isinstance(p["targetPort"], str)} <= named_ports
        elif o["kind"] == "PodDisruptionBudget":
            assert pods_selected(objs, ns, o["spec"]["selector"]), where
        elif o["kind"] == "NetworkPolicy":
            pods = pods_selected(objs, ns, o["spec"]["podSelector"])
            named_ports = {p["name"] for t in pods for c in t["spec"]["containers"] for p in c.get("ports", [])}
            assert pods, where
            for rule in o["spec"].get("ingress", []):
                for peer in rule.get("from", []):
                    if "podSelector" in peer and "namespaceSelector" not in peer:  # a peer in this namespace
                        assert pods_selected(objs, ns, peer["podSelector"]), f"{where}: peer selects no pod"
                for port in rule.get("ports", []):
                    assert not isinstance(port["port"], str) or port["port"] in named_ports, f"{where}: {port}"


def references(container: Obj) -> Iterator[tuple[str, Obj, str | None]]:
    """(kind, reference, key or None) of every Secret and ConfigMap a container reads."""
    for source in container.get("envFrom", []):
        for field, kind in (("secretRef", "Secret"), ("configMapRef", "ConfigMap")):
            if field in source:
                yield kind, source[field], None
    for env in container.get("env", []):
        for field, kind in (("secretKeyRef", "Secret"), ("configMapKeyRef", "ConfigMap")):
            if field in env.get("valueFrom", {}):
                yield kind, env["valueFrom"][field], env["valueFrom"][field]["key"]


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_every_secret_and_configmap_reference_resolves(name: str, rendered: dict[str, list[Obj]]) -> None:
    objs = rendered[name]
    for workload, template in pod_templates(objs):
        for c in containers(template["spec"]):
            where = f"{workload['metadata']['name']}/{c['name']}"
            for kind, ref, key in references(c):
                target = named(objs, kind, ref["name"])
                assert target is not None or ref.get("optional"), f"{where}: no {kind} {ref['name']}"
                if target is not None and key is not None:
                    held = secret_data(target) if kind == "Secret" else target.get("data", {})
                    assert key in held or ref.get("optional"), f"{where}: {kind} {ref['name']} has no {key}"
    for auth in of_kind(objs, "TriggerAuthentication"):
        for ref in auth["spec"]["secretTargetRef"]:
            secret = named(objs, "Secret", ref["name"])
            assert secret is not None and ref["key"] in secret_data(secret), f"{auth['metadata']['name']}: {ref}"


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_every_scaled_object_targets_a_workload_here(name: str, rendered: dict[str, list[Obj]]) -> None:
    objs = rendered[name]
    for scaled in of_kind(objs, "ScaledObject"):
        target = scaled["spec"]["scaleTargetRef"]
        assert named(objs, target.get("kind", "Deployment"), target["name"]) is not None, target
        assert "replicas" not in named(objs, target.get("kind", "Deployment"), target["name"])["spec"], (
            "KEDA owns the replica count: an apply would reset it"
        )
        for trigger in scaled["spec"]["triggers"]:
            if "authenticationRef" in trigger:
                assert named(objs, "TriggerAuthentication", trigger["authenticationRef"]["name"]) is not None


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_jobs_scale_on_the_exporters_active_jobs_per_slot(name: str, rendered: dict[str, list[Obj]]) -> None:
    objs = rendered[name]
    [(jobs, jobs_container)] = workers(name, objs, "slmflow.jobs")
    scaled = scaled_object(objs, jobs["metadata"]["name"])
    [trigger] = scaled["spec"]["triggers"]
    assert (trigger["type"], trigger["metricType"]) == ("metrics-api", "AverageValue")
    assert trigger["metadata"]["valueLocation"] == "jobs.active"
    assert trigger["metadata"]["targetValue"] == option(jobs_container["command"], "--concurrency")
    # KEDA's operator calls the url from its own namespace: the host must name the Service's.
    url = urlsplit(trigger["metadata"]["url"])
    service_name, namespace, *_ = (url.hostname or "").split(".")
    service = named(objs, "Service", service_name)
    assert service is not None and service["metadata"].get("namespace") == namespace, url.hostname
    assert url.hostname in (f"{service_name}.{namespace}.svc", f"{service_name}.{namespace}.svc.cluster.local")
    assert url.path == "/metrics.json"
    [port] = [p for p in service["spec"]["ports"] if p["port"] == url.port]
    [exporter] = pods_selected(objs, namespace, {"matchLabels": service["spec"]["selector"]})
    [container] = exporter["spec"]["containers"]
    [container_port] = [p["containerPort"] for p in container["ports"] if p["name"] == port["targetPort"]]
    assert container["command"][:2] == ["slmflow", "metrics"]
    assert option(container["command"], "--port") == str(container_port)


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_tools_scale_on_their_redis_list_read_with_the_secrets_address(
    name: str, rendered: dict[str, list[Obj]]
) -> None:
    objs = rendered[name]
    [(tools, _)] = workers(name, objs, "slmflow.tools")
    scaled = scaled_object(objs, tools["metadata"]["name"])
    [trigger] = scaled["spec"]["triggers"]
    assert (trigger["type"], trigger["metadata"]["listName"]) == ("redis", "slmflow.tools")
    auth = named(objs, "TriggerAuthentication", trigger["authenticationRef"]["name"])
    assert auth is not None
    [address_ref] = [r for r in auth["spec"]["secretTargetRef"] if r["parameter"] == "address"]
    secret = named(objs, "Secret", address_ref["name"])
    assert secret is not None
    host = secret_data(secret)[address_ref["key"]].rsplit(":", 1)[0]
    # An in-cluster Redis: KEDA resolves its name from KEDA's namespace, so it must be fully qualified.
    if named(objs, "Service", host.split(".")[0]) is not None:
        namespace = tools["metadata"]["namespace"]
        assert host.removesuffix(".cluster.local") == f"{host.split('.')[0]}.{namespace}.svc", host


# --- overlays and components -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", OVERLAYS)
def test_an_overlay_sets_its_namespace_and_pins_every_image(name: str, rendered: dict[str, list[Obj]]) -> None:
    namespace = kustomization(name)["namespace"]
    for o in rendered[name]:
        if o["kind"] != "Namespace":
            assert o["metadata"].get("namespace") == namespace, f"{o['kind']}/{o['metadata']['name']}"
    assert [o["metadata"]["name"] for o in of_kind(rendered[name], "Namespace")] == [namespace]
    for _, template in pod_templates(rendered[name]):
        for c in containers(template["spec"]):
            repo, image = image_repo(c["image"]), c["image"]
            assert repo not in ("vllm-cpu", "vllm-openai") and image != repo, f"{image}: no real image or tag"
            assert not image.endswith(":latest"), image


@pytest.mark.parametrize("name", OVERLAYS)
def test_an_overlays_secret_has_every_key_of_the_placeholder(name: str, rendered: dict[str, list[Obj]]) -> None:
    placeholder = named(rendered[PACKAGE_BASE], "Secret", "slmflow-secrets")
    secret = named(rendered[name], "Secret", "slmflow-secrets")
    assert placeholder is not None and secret is not None
    assert set(secret_data(secret)) == set(secret_data(placeholder))
    assert secret_data(secret) != secret_data(placeholder), "the overlay must replace the placeholders"


def test_every_component_is_used_by_an_overlay() -> None:
    used = {(ROOT / o / c).resolve() for o in OVERLAYS for c in kustomization(o).get("components", [])}
    nested = {(c / n).resolve() for c in used for n in kustomization(str(c.relative_to(ROOT))).get("components", [])}
    assert {p.parent for p in (ROOT / DEPLOY / "components").glob("*/kustomization.yaml")} <= used | nested


def test_real_secrets_stay_out_of_git_and_their_example_lists_every_key() -> None:
    placeholder = yaml.safe_load((ROOT / PACKAGE_BASE / "secrets.yaml").read_text())["stringData"]
    examples = list((ROOT / DEPLOY).rglob("secrets.env.example"))
    assert examples
    for example in examples:
        real = example.with_suffix("").relative_to(ROOT)
        ignored = subprocess.run(["git", "check-ignore", "-q", str(real)], cwd=ROOT, check=False)
        assert ignored.returncode == 0, f"{real} is not git-ignored"
        keys = {line.split("=", 1)[0] for line in example.read_text().splitlines() if line and line[0] != "#"}
        assert keys == set(placeholder), example


@pytest.mark.parametrize("name", OVERLAYS)
def test_the_model_server_serves_lora_adapters_fixed_at_start(name: str, rendered: dict[str, list[Obj]]) -> None:
    objs = rendered[name]
    model = named(objs, "Deployment", "slmflow-model")
    assert model is not None, "every overlay serves the small models"
    [vllm] = model["spec"]["template"]["spec"]["containers"]
    args = [*vllm.get("command", []), *vllm.get("args", [])]
    assert {"--enable-lora", "--lora-modules"} <= {a.split("=")[0] for a in args}
    assert args[args.index("--lora-modules") + 1].split("=")[1].startswith("/adapters/")
    assert any(m["mountPath"] == "/adapters" for m in vllm["volumeMounts"])
    env = {e["name"]: e.get("value") for e in vllm.get("env", [])}
    assert env.get("VLLM_ALLOW_RUNTIME_LORA_UPDATING", "false").lower() not in ("1", "true")
    assert vllm["startupProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert {"name": "http", "containerPort": 8000, "protocol": "TCP"} in vllm["ports"]
    service = named(objs, "Service", "slmflow-model")
    assert service is not None
    url = urlsplit(settings_data(objs)["SLMFLOW_SLM_BASE_URL"])
    assert (url.hostname, url.port) == ("slmflow-model", service["spec"]["ports"][0]["port"])
    assert named(objs, "PodDisruptionBudget", "slmflow-model") is not None
    if "nvidia.com/gpu" in vllm["resources"]["limits"]:
        scaled = scaled_object(objs, "slmflow-model")
        [trigger] = scaled["spec"]["triggers"]
        assert trigger["type"] == "prometheus" and "vllm:num_requests_waiting" in trigger["metadata"]["query"]


@pytest.mark.parametrize("name", OVERLAYS)
def test_in_cluster_stores_persist_and_workers_wait_for_them(name: str, rendered: dict[str, list[Obj]]) -> None:
    objs = rendered[name]
    redis, postgres = named(objs, "StatefulSet", "slmflow-redis"), named(objs, "StatefulSet", "slmflow-postgres")
    assert (redis is None) == (postgres is None), "both stores in the cluster, or both outside"
    waits = {"wait-for-redis", "wait-for-postgres"} if redis is not None else set()
    for queue in ("slmflow.jobs", "slmflow.tools"):
        [(deployment, _)] = workers(name, objs, queue)
        init = {c["name"] for c in deployment["spec"]["template"]["spec"].get("initContainers", [])}
        # External stores: a wait for an in-cluster one would hold the workers forever.
        assert init & {"wait-for-redis", "wait-for-postgres"} == waits, deployment["metadata"]["name"]
    if redis is not None and postgres is not None:
        [server] = redis["spec"]["template"]["spec"]["containers"]
        assert option(server["args"], "--appendonly") == "yes"
        for store in (redis, postgres):
            assert store["spec"]["volumeClaimTemplates"], "a store without a volume loses its data"
