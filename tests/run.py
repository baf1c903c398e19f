"""Install what the test suite needs, then run it: ``python3 tests/run.py [pytest args]``.

On a fresh machine with only Python and pip this installs tornado_sse (editable) with its test
extras, and, when they are missing, the system packages some tests drive for real (Chromium and
its driver and Firefox ESR for the browser tests, redis-server for the Redis tests, nginx and
openssl for the proxy tests, curl for the demo's curl line, node and npm for the npm
``eventsource`` test) with ``apt-get`` (as root, or through ``sudo -n``), and the npm packages
of ``tests/e2e/node``.
Then it runs pytest on the whole suite and exits with pytest's status.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: System commands the suite drives, and the Debian packages that provide them.
SYSTEM_PACKAGES = {
    "chromium": "chromium",
    "chromedriver": "chromium-driver",
    "redis-server": "redis-server",
    "redis-cli": "redis-tools",
    "nginx": "nginx",
    "firefox-esr": "firefox-esr",
    "openssl": "openssl",
    "curl": "curl",
    "node": "nodejs",
    "npm": "npm",
}

#: The npm packages of the node end-to-end test (tests/e2e/node/package.json).
NODE_DIR = os.path.join(ROOT, "tests", "e2e", "node")


def run(command: list[str]) -> None:
    print("+ " + " ".join(command), flush=True)
    subprocess.run(command, check=True, cwd=ROOT)


def install_python_packages() -> None:
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-e",
            ".[test,redis]",
        ]
    )


def install_system_packages() -> None:
    missing = [pkg for cmd, pkg in SYSTEM_PACKAGES.items() if shutil.which(cmd) is None]
    if not missing:
        return
    if os.geteuid() == 0:
        sudo: list[str] = []
    elif shutil.which("sudo"):
        sudo = ["sudo", "-n"]
    else:
        sys.exit(
            "tests/run.py: %s missing and no way to install them (not root, no sudo)"
            % ", ".join(missing)
        )
    if shutil.which("apt-get") is None:
        sys.exit("tests/run.py: install %s with your package manager" % ", ".join(missing))
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for command in (
        ["apt-get", "update", "-q"],
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
    ):
        print("+ " + " ".join(sudo + command), flush=True)
        subprocess.run(sudo + command, check=True, env=env, stdout=subprocess.DEVNULL)


def install_node_packages() -> None:
    """The npm packages of tests/e2e/node, exactly as its lock file names them."""
    if not os.path.isdir(os.path.join(NODE_DIR, "node_modules", "eventsource")):
        run(["npm", "ci", "--prefix", NODE_DIR, "--no-audit", "--no-fund"])


def main() -> int:
    install_python_packages()
    install_system_packages()
    install_node_packages()
    command = [sys.executable, "-m", "pytest", *sys.argv[1:]]
    print("+ " + " ".join(command), flush=True)
    return subprocess.run(command, cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main())
