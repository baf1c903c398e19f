"""The Dockerfile, compose.yaml, the Kubernetes manifest, the systemd unit and every install
line of the docs name only things that exist: paths, extras, commands, settings, the version.

No image is built here (there is no container engine on CI): this is what can be checked
without one. A version bump, a renamed extra or a moved file fails here first.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from tornado_sse import __version__
from tornado_sse.config import SPECS, Settings, load, read_conf_file

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
EXTRAS = set(PYPROJECT["project"]["optional-dependencies"])
SCRIPTS = set(PYPROJECT["project"]["scripts"])
SETTING_NAMES = {name for spec in SPECS for name in spec.env_names}

#: Where install lines are written for people to copy.
DOCUMENTS = [
    *ROOT.glob("*.md"),
    *(ROOT / "docs").rglob("*.md"),
    *(ROOT / "examples").rglob("*.md"),
    *(ROOT / "clients").rglob("*.md"),
    ROOT / "docs" / "deploy" / "tornado-sse.service",
    ROOT / "docs" / "deploy" / "kubernetes-sidecar.yaml",
    ROOT / "Dockerfile",
    ROOT / "compose.yaml",
    ROOT / "examples" / "flask_backend" / "requirements.txt",
]


def dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile's instructions: ``(KEYWORD, arguments)``, continuation lines joined."""
    instructions = []
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, arguments = line.partition(" ")
            instructions.append((keyword.upper(), arguments.strip()))
    return instructions


def instructions(keyword: str) -> list[str]:
    return [arguments for k, arguments in dockerfile() if k == keyword]


def exec_form(arguments: str) -> list[str]:
    value = json.loads(arguments)
    assert isinstance(value, list), arguments
    return value


def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def substitute(value: str) -> str:
    """A compose value with ``${VAR:-default}`` replaced by its default."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value)


def install_lines() -> list[tuple[Path, str]]:
    """Every ``pip install ...`` command written in :data:`DOCUMENTS`."""
    found = []
    for path in DOCUMENTS:
        for match in re.finditer(r"pip install[^`\n&|;)\"]*", path.read_text()):
            found.append((path, match.group(0).strip()))
    return found


# --------------------------------------------------------------------------------------------
# Install lines


def test_every_install_line_works_from_a_clone():
    lines = install_lines()
    assert len(lines) >= 8, lines
    for path, line in lines:
        words = shlex.split(line)[2:]
        where = "%s: %s" % (path.relative_to(ROOT), line)
        local = "--find-links" in words  # a wheel directory, as in the Dockerfile
        for word in words:
            if word.startswith("-"):
                continue
            name = re.split(r"[\[<>=]", word)[0]
            assert local or name not in ("tornado-sse", "tornado-sse-client"), (
                "not on PyPI: " + where
            )
            extras = re.search(r"\[([\w,-]+)\]", word)
            if extras:
                assert set(extras.group(1).split(",")) <= EXTRAS, where
            if word.startswith(".") or word.endswith(".txt"):
                assert (ROOT / word.split("[")[0]).exists(), where


def test_the_requirements_of_the_flask_example_exist():
    text = (ROOT / "examples" / "flask_backend" / "requirements.txt").read_text()
    paths = [line for line in text.splitlines() if line.startswith("./")]
    assert paths == ["./clients/python"]
    assert (ROOT / paths[0] / "pyproject.toml").is_file()


# --------------------------------------------------------------------------------------------
# Dockerfile


def test_dockerfile_builds_from_a_slim_python_matching_requires_python():
    requires = PYPROJECT["project"]["requires-python"]
    assert requires == ">=3.11"
    bases = [arguments.split()[0] for arguments in instructions("FROM")]
    assert bases and all(base == "python:3.11-slim" for base in bases), bases


def test_dockerfile_copies_only_what_exists():
    copies = [a.split() for a in instructions("COPY") if not a.startswith("--from")]
    assert copies
    for *sources, _ in copies:
        for source in sources:
            assert (ROOT / source).exists(), source
    copied = {source for *sources, _ in copies for source in sources}
    # Everything the gateway's build needs (pyproject names README and LICENSE, and the
    # client's package comes from clients/python).
    assert {"pyproject.toml", "README.md", "LICENSE", "tornado_sse", "clients/python"} <= copied


def test_dockerfile_installs_existing_extras_and_runs_tornado_sse_as_non_root():
    runs = " ".join(instructions("RUN"))
    for extras in re.findall(r"\[([\w,-]+)\]", runs):
        assert set(extras.split(",")) <= EXTRAS, extras
    users = instructions("USER")
    assert users and users[-1] not in ("root", "0"), users
    assert [k for k, _ in dockerfile()].index("USER") > [k for k, _ in dockerfile()].index("RUN")
    assert exec_form(instructions("ENTRYPOINT")[-1]) == ["tornado-sse"]
    assert "tornado-sse" in SCRIPTS
    assert instructions("EXPOSE") == [str(Settings().port)]


def test_dockerfile_healthcheck_asks_healthz():
    (healthcheck,) = instructions("HEALTHCHECK")
    command = healthcheck.split(" CMD ", 1)[1]
    assert "/healthz" in " ".join(exec_form(command))


def test_dockerfile_default_command_reads_a_conf_file_it_copied():
    command = exec_form(instructions("CMD")[-1])
    assert command[0] == "--conf"
    copies = {a.split()[-1]: a.split()[0] for a in instructions("COPY")}
    source = copies[command[1]]
    assert read_conf_file(str(ROOT / source))  # parses, names only known settings


# --------------------------------------------------------------------------------------------
# compose.yaml


def test_compose_runs_redis_and_two_gateways_of_the_image_the_dockerfile_builds():
    services = compose()["services"]
    gateways = {name: s for name, s in services.items() if s.get("build") == "."}
    assert sorted(gateways) == ["gateway-1", "gateway-2"]
    assert (ROOT / "Dockerfile").is_file()
    for service in gateways.values():
        assert service["image"] == "tornado-sse:%s" % __version__
    assert services["redis"]["image"].startswith("redis:")
    host_ports = [s["ports"][0].split(":")[0] for s in gateways.values()]
    assert len(set(host_ports)) == 2


def test_compose_gateways_are_configured_with_valid_settings_that_name_its_services():
    services = compose()["services"]
    for name in ("gateway-1", "gateway-2"):
        environment = {k: substitute(str(v)) for k, v in services[name]["environment"].items()}
        assert set(environment) <= SETTING_NAMES, set(environment) - SETTING_NAMES
        settings = load(environ=environment)  # every value valid
        assert settings.redis_url == "redis://redis:6379/0"
        callback = re.match(r"http://([\w-]+):(\d+)/", settings.callback_url or "")
        assert callback, settings.callback_url
        backend = services[callback.group(1)]
        assert backend["environment"]["PORT"] == callback.group(2)


def test_compose_backend_runs_files_that_exist():
    backend = compose()["services"]["backend"]
    mounts = {}
    for volume in backend["volumes"]:
        host, container, *_ = volume.split(":")
        assert (ROOT / host).is_dir(), volume
        mounts[PurePosixPath(container)] = ROOT / host

    def on_host(path: str) -> Path:
        full = PurePosixPath(backend["working_dir"]) / path
        for container, host in mounts.items():
            if full.is_relative_to(container):
                return host / full.relative_to(container)
        raise AssertionError("%s is not mounted" % full)

    scripts = re.findall(r"\S+\.py", " ".join(backend["command"]))
    assert scripts == ["examples/flask_backend/app.py"]
    assert on_host(scripts[0]).is_file()
    assert (on_host(backend["environment"]["PYTHONPATH"]) / "tornado_sse_client").is_dir()


# --------------------------------------------------------------------------------------------
# Kubernetes and systemd


def kubernetes_gateway() -> dict[str, Any]:
    documents = list(yaml.safe_load_all((ROOT / "docs/deploy/kubernetes-sidecar.yaml").read_text()))
    (deployment,) = [d for d in documents if d["kind"] == "Deployment"]
    containers = deployment["spec"]["template"]["spec"]["containers"]
    (gateway,) = [c for c in containers if c["name"] == "tornado-sse"]
    return gateway


def test_kubernetes_runs_the_image_the_dockerfile_builds_as_its_user():
    gateway = kubernetes_gateway()
    assert gateway["image"].endswith("/tornado-sse:%s" % __version__)
    assert str(gateway["securityContext"]["runAsUser"]) == instructions("USER")[-1]
    text = (ROOT / "docs/deploy/kubernetes-sidecar.yaml").read_text()
    assert "docker build -t %s ." % gateway["image"] in text  # says how to build it
    assert "docker push %s" % gateway["image"] in text


@pytest.mark.parametrize("probe", ["readinessProbe", "livenessProbe"])
def test_kubernetes_probes_and_settings_exist(probe):
    gateway = kubernetes_gateway()
    assert gateway[probe]["httpGet"]["path"] in ("/readyz", "/healthz")
    assert {e["name"] for e in gateway["env"]} <= SETTING_NAMES


def test_systemd_unit_runs_the_installed_command():
    text = (ROOT / "docs/deploy/tornado-sse.service").read_text()
    (exec_start,) = re.findall(r"^ExecStart=(\S+)", text, re.MULTILINE)
    assert PurePosixPath(exec_start).name in SCRIPTS
    assert PurePosixPath(exec_start).parent == PurePosixPath("/opt/tornado-sse/bin")
    assert "/opt/tornado-sse/bin/pip install '.[" in text
