"""infra/k8s: the kustomization lists exactly the manifests, and the objects fit together and
fit the bridge (its probes, its drain, its settings, its image, its size)."""

from __future__ import annotations

import re
from typing import Any

from bridge.cli import build_parser
from bridge.settings import Settings
from tests.infra.infra_files import (
    CALLS_PER_POD,
    CPU_SECONDS_PER_CALL_SECOND,
    DOCKERFILE,
    K8S,
    K8S_NOT_APPLIED,
    METRICS,
    MIB_PER_CALL,
    PROCESS_MIB,
    dockerfile_instructions,
    k8s_documents,
    k8s_objects,
    kustomization,
    setting_names,
    stages,
)

# What Twilio, OpenAI and people reach from outside; everything else stays in the cluster.
PUBLIC_PREFIXES = {"/twilio", "/openai", "/calls", "/api"}
# The credentials the Deployment takes from the Secret.
SECRET_KEYS = {
    "OPENAI_API_KEY",
    "TWILIO_AUTH_TOKEN",
    "BRIDGE_REVIEW_TOKEN",
    "BRIDGE_API_TOKEN",
    "BRIDGE_DATABASE_URL",
}


def _object(kind: str, name: str = "bridge") -> dict[str, Any]:
    return k8s_objects()[(kind, name)]


def _pod() -> dict[str, Any]:
    spec: dict[str, Any] = _object("Deployment")["spec"]["template"]["spec"]
    return spec


def _container() -> dict[str, Any]:
    (container,) = _pod()["containers"]
    assert container["name"] == "bridge"
    return container  # type: ignore[no-any-return]


def _pod_labels() -> dict[str, str]:
    labels: dict[str, str] = _object("Deployment")["spec"]["template"]["metadata"]["labels"]
    return labels


def _selects_pods(selector: dict[str, Any]) -> bool:
    labels = _pod_labels()
    return bool(selector["matchLabels"]) and all(
        labels.get(k) == v for k, v in selector["matchLabels"].items()
    )


def _plain_env() -> dict[str, str]:
    """The container's environment apart from the Secret: ConfigMap, then its own values."""
    env: dict[str, str] = {}
    for source in _container().get("envFrom", []):
        config_map = _object("ConfigMap", source["configMapRef"]["name"])
        env.update(config_map["data"])
    for item in _container().get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
    return env


def _quantity(text: str) -> float:
    """A Kubernetes quantity: CPU in cores, memory in MiB."""
    if text.endswith("m"):
        return int(text[:-1]) / 1000
    units = {"Ki": 1 / 1024, "Mi": 1.0, "Gi": 1024.0}
    for suffix, factor in units.items():
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)


def test_kustomization_lists_every_manifest_and_only_existing_ones() -> None:
    listed = kustomization()["resources"]
    assert len(listed) == len(set(listed))
    for name in listed:
        assert (K8S / name).is_file(), f"kustomization.yaml lists missing {name}"
    on_disk = {p.name for p in K8S.glob("*.y*ml")} - {"kustomization.yaml"}
    assert set(listed) == on_disk - K8S_NOT_APPLIED
    assert kustomization()["kind"] == "Kustomization"


def test_kustomization_sets_the_image_the_deployment_names() -> None:
    images = {image["name"] for image in kustomization()["images"]}
    assert _container()["image"] in images


def test_objects_carry_no_namespace_of_their_own() -> None:
    # kustomization.yaml sets it for all of them, so an overlay can move them.
    for (kind, _name), obj in k8s_objects().items():
        if kind != "Namespace":
            assert "namespace" not in obj["metadata"], kind
    assert ("Namespace", kustomization()["namespace"]) in k8s_objects()


def test_grace_period_outlasts_the_drain() -> None:
    drain = float(_plain_env()["BRIDGE_DRAIN_S"])
    pre_stop = _container()["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    grace = _pod()["terminationGracePeriodSeconds"]
    assert grace >= drain + float(pre_stop[1]) + 30, (grace, drain)


def test_probes_use_the_bridge_health_routes() -> None:
    container = _container()
    (port,) = container["ports"]
    assert port["containerPort"] == 8000
    readiness = container["readinessProbe"]["httpGet"]
    liveness = container["livenessProbe"]["httpGet"]
    startup = container["startupProbe"]["httpGet"]
    assert readiness["path"] == "/readyz"
    assert liveness["path"] == "/healthz" and startup["path"] == "/healthz"
    for probe in (readiness, liveness, startup):
        assert probe["port"] in (port["name"], port["containerPort"])


def test_command_is_a_valid_bridge_serve() -> None:
    args = build_parser().parse_args(_container()["args"])
    assert args.command == "serve" and args.host == "0.0.0.0" and args.port == 8000
    assert not args.insecure


def test_runs_non_root_on_a_read_only_root_filesystem() -> None:
    pod = _pod()
    container = _container()
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    context = container["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert "/data" in mounts  # the image's working directory
    assert pod["automountServiceAccountToken"] is False


def test_runs_as_the_image_user() -> None:
    final = stages(dockerfile_instructions(DOCKERFILE.read_text()))[-1]
    (user,) = [ins.args for ins in final if ins.keyword == "USER"]
    uid, _, gid = user.partition(":")
    context = _pod()["securityContext"]
    assert context["runAsUser"] == int(uid) and context["runAsGroup"] == int(gid)


def test_resources_follow_the_load_test_figures() -> None:
    resources = _container()["resources"]
    requests, limits = resources["requests"], resources["limits"]
    assert requests == {"cpu": "500m", "memory": "256Mi"}
    cpu_needed = CALLS_PER_POD * CPU_SECONDS_PER_CALL_SECOND
    memory_needed = PROCESS_MIB + CALLS_PER_POD * MIB_PER_CALL
    assert cpu_needed <= _quantity(requests["cpu"]) <= 2 * cpu_needed
    assert memory_needed <= _quantity(requests["memory"]) <= 2 * memory_needed
    assert _quantity(limits["cpu"]) >= _quantity(requests["cpu"])
    assert _quantity(limits["memory"]) >= _quantity(requests["memory"])


def test_credentials_come_from_the_secret() -> None:
    example = k8s_documents(K8S / "secret.example.yaml")[0]
    refs = {
        item["name"]: item["valueFrom"]["secretKeyRef"]
        for item in _container()["env"]
        if "valueFrom" in item
    }
    assert set(refs) >= SECRET_KEYS
    for ref in refs.values():
        assert ref["name"] == example["metadata"]["name"]
        assert ref["key"] in example["stringData"], f"secret.example.yaml lacks {ref['key']}"
    for key, value in example["stringData"].items():
        assert "REPLACE_ME" in value, f"secret.example.yaml: {key} is not a placeholder"
    for name in SECRET_KEYS:
        assert name not in _plain_env(), f"{name} written in plain text"


def test_plain_settings_are_valid_bridge_settings() -> None:
    env = _plain_env()
    # uvicorn's own: which proxies' X-Forwarded-For to believe.
    unknown = set(env) - setting_names() - {"FORWARDED_ALLOW_IPS"}
    assert not unknown, f"not bridge settings: {unknown}"
    settings = Settings(_env_file=None, **env)
    assert settings.public_url.startswith("https://")
    assert settings.drain_s == float(env["BRIDGE_DRAIN_S"])


def test_service_pdb_and_policy_select_the_pods() -> None:
    assert _selects_pods(_object("Deployment")["spec"]["selector"])
    service = _object("Service")
    assert all(_pod_labels().get(k) == v for k, v in service["spec"]["selector"].items())
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] in ("http", 8000)
    assert _selects_pods(_object("PodDisruptionBudget")["spec"]["selector"])
    assert _selects_pods(
        {"matchLabels": _object("NetworkPolicy")["spec"]["podSelector"]["matchLabels"]}
    )


def test_disruptions_leave_calls_a_bridge() -> None:
    pdb = _object("PodDisruptionBudget")["spec"]
    hpa = _object("HorizontalPodAutoscaler")["spec"]
    assert hpa["minReplicas"] >= 2
    assert pdb.get("maxUnavailable", 0) == 1 or pdb.get("minAvailable", 0) >= 1
    strategy = _object("Deployment")["spec"]["strategy"]["rollingUpdate"]
    assert strategy["maxUnavailable"] == 0


def test_autoscaler_follows_active_calls() -> None:
    hpa = _object("HorizontalPodAutoscaler")
    spec = hpa["spec"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = spec["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "bridge")
    (pods,) = [m["pods"] for m in spec["metrics"] if m["type"] == "Pods"]
    assert pods["metric"]["name"] == "bridge_calls_active" in METRICS
    per_pod = float(pods["target"]["averageValue"])
    assert 0 < per_pod < CALLS_PER_POD
    # Scaling down drains pods: slowly.
    assert spec["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 300
    text = (K8S / "hpa.yaml").read_text()
    assert "prometheus-adapter" in text


def test_network_policy_admits_the_ingress_and_allows_what_the_bridge_calls() -> None:
    spec = _object("NetworkPolicy")["spec"]
    assert set(spec["policyTypes"]) == {"Ingress", "Egress"}
    sources = set()
    for rule in spec["ingress"]:
        assert [p["port"] for p in rule["ports"]] == [8000]
        for peer in rule["from"]:
            sources.add(peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"])
    assert "ingress-nginx" in sources
    egress = {(p.get("protocol", "TCP"), p["port"]) for r in spec["egress"] for p in r["ports"]}
    assert {("UDP", 53), ("TCP", 53), ("TCP", 443), ("TCP", 5432)} <= egress


def test_ingress_publishes_the_public_routes_only() -> None:
    ingress = _object("Ingress")
    service = _object("Service")
    (rule,) = ingress["spec"]["rules"]
    paths = rule["http"]["paths"]
    assert {p["path"] for p in paths} == PUBLIC_PREFIXES
    for path in paths:
        backend = path["backend"]["service"]
        assert backend["name"] == service["metadata"]["name"]
        assert backend["port"]["name"] == service["spec"]["ports"][0]["name"]
    (tls,) = ingress["spec"]["tls"]
    assert rule["host"] in tls["hosts"]
    # The media WebSocket lives as long as the call.
    timeout = ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-read-timeout"]
    assert int(timeout) >= 3600


def test_public_url_matches_the_ingress_host() -> None:
    host = _object("Ingress")["spec"]["rules"][0]["host"]
    assert _plain_env()["BRIDGE_PUBLIC_URL"] == f"https://{host}"


def test_secret_example_is_marked_and_not_applied() -> None:
    text = (K8S / "secret.example.yaml").read_text()
    assert re.search(r"EXAMPLE ONLY", text)
    assert "secret.example.yaml" not in kustomization()["resources"]
