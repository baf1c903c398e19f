"""Packaging: one version per distribution, written once and equal for both; the license and
the type marker shipped with each."""

from __future__ import annotations

import tomllib
from pathlib import Path

import tornado_sse
import tornado_sse_client

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "clients" / "python"


def project(path: Path) -> dict:
    return tomllib.loads((path / "pyproject.toml").read_text())


def test_each_version_is_read_from_its_package_and_both_are_equal():
    gateway, client = project(ROOT), project(CLIENT)
    assert gateway["project"]["dynamic"] == ["version"]
    assert gateway["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "tornado_sse.__version__"
    }
    assert client["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "tornado_sse_client.__version__"
    }
    assert tornado_sse.__version__ == tornado_sse_client.__version__
    assert "version" not in (ROOT / "setup.py").read_text()


def test_both_distributions_ship_the_mit_license_and_py_typed():
    for path, package in ((ROOT, ROOT / "tornado_sse"), (CLIENT, CLIENT / "tornado_sse_client")):
        meta = project(path)["project"]
        assert meta["license"] == "MIT"
        assert meta["license-files"] == ["LICENSE"]
        assert (path / "LICENSE").read_text() == (ROOT / "LICENSE").read_text()
        assert (package / "py.typed").is_file()


def test_the_client_distribution_needs_nothing_but_the_standard_library():
    assert project(CLIENT)["project"]["dependencies"] == []


def test_the_gateway_distribution_carries_the_client_package():
    find = project(ROOT)["tool"]["setuptools"]["packages"]["find"]
    assert find["where"] == [".", "clients/python"]
    assert "tornado_sse_client" in find["include"]
