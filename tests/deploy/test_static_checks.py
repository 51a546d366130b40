"""deploy/check.py in ``make test``: manifests, Dockerfile and compose file, offline.

Each check also gets a broken input, to show that it can fail.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import check
import pytest
import yaml


@pytest.fixture(scope="module")
def docs() -> list[dict]:
    return check.render()[0]


def test_kustomize_base_renders_offline(docs: list[dict]) -> None:
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in docs)
    assert kinds == [
        ("PodDisruptionBudget", "raftkv"),
        ("Service", "raftkv"),
        ("Service", "raftkv-peers"),
        ("StatefulSet", "raftkv"),
    ]
    assert all(d["metadata"]["labels"]["app.kubernetes.io/part-of"] == "raftkv" for d in docs)


def test_python_renderer_matches_kubectl() -> None:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl not installed: the offline renderer alone is used")
    assert check.check_renderers_agree() == []


@pytest.mark.parametrize("version", check.KUBERNETES_VERSIONS)
def test_manifests_match_the_kubernetes_schema(docs: list[dict], version: str) -> None:
    assert check.check_schema(docs, version) == []


def test_schema_check_rejects_unknown_and_mistyped_fields(docs: list[dict]) -> None:
    typo = copy.deepcopy(docs)
    next(d for d in typo if d["kind"] == "StatefulSet")["spec"]["replica"] = 3
    problems = check.check_schema(typo)
    assert len(problems) == 1 and "replica" in problems[0], problems
    mistyped = copy.deepcopy(docs)
    sts = next(d for d in mistyped if d["kind"] == "StatefulSet")
    sts["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "7001"
    problems = check.check_schema(mistyped)
    assert len(problems) == 1 and "containerPort" in problems[0], problems


def test_kubernetes_rules(docs: list[dict]) -> None:
    assert check.check_k8s_rules(docs) == []


def test_kubernetes_rules_catch_mistakes(docs: list[dict]) -> None:
    bad = copy.deepcopy(docs)
    sts = next(d for d in bad if d["kind"] == "StatefulSet")
    pod = sts["spec"]["template"]["spec"]
    del pod["affinity"]
    del pod["containers"][0]["readinessProbe"]
    sts["spec"]["podManagementPolicy"] = "OrderedReady"
    next(d for d in bad if d["kind"] == "PodDisruptionBudget")["spec"]["maxUnavailable"] = 2
    next(d for d in bad if d["metadata"]["name"] == "raftkv-peers")["spec"].pop(
        "publishNotReadyAddresses"
    )
    problems = "\n".join(check.check_k8s_rules(bad))
    for needle in ("anti-affinity", "readinessProbe", "Parallel", "maxUnavailable", "not-ready"):
        assert needle in problems


def test_hadolint_passes() -> None:
    assert check.check_hadolint() == []


def test_hadolint_flags_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install curl\nCMD python app.py\n")
    problems = "\n".join(check.check_hadolint(bad))
    assert "DL3007" in problems  # latest tag
    assert "DL3025" in problems  # JSON CMD


def test_dockerfile_rules() -> None:
    assert check.check_dockerfile_rules() == []
    assert check.dockerfile_command() == ["raftkv", "serve"]
    env = check.dockerfile_env()
    assert env["RAFTKV_DATA_DIR"] == "/var/lib/raftkv"


def test_dockerfile_rules_catch_mistakes(tmp_path: Path) -> None:
    text = check.DOCKERFILE.read_text()
    text = text.replace("python:3.11.11-slim-bookworm", "python:3.11-slim")
    text = text.replace("USER 10001:10001", "USER root")
    text = text.replace('VOLUME ["/var/lib/raftkv"]', "")
    bad = tmp_path / "Dockerfile"
    bad.write_text(text)
    problems = "\n".join(check.check_dockerfile_rules(bad))
    for needle in ("pinned", "non-root", "VOLUME"):
        assert needle in problems


def test_compose_file() -> None:
    assert check.check_compose() == []


def test_compose_check_catches_mistakes(tmp_path: Path) -> None:
    doc = check.load_compose()
    doc["services"]["n3"]["volumes"] = ["/tmp/n3:/var/lib/raftkv"]  # not a named volume
    doc["services"]["n2"]["environment"]["RAFTKV_INITIAL_CLUSTER"] = "n1=n1:7001/n1:8001"
    bad = tmp_path / "docker-compose.yml"
    bad.write_text(yaml.safe_dump(doc))
    problems = "\n".join(check.check_compose(bad))
    assert "named volume" in problems
    assert "same RAFTKV_INITIAL_CLUSTER" in problems


def test_check_script_passes(capsys: pytest.CaptureFixture[str]) -> None:
    assert check.main() == 0
    assert "FAIL" not in capsys.readouterr().out
