"""``shequ up``: the embedded broker and store, every service, and the front door.

Order matters and is the reason this module exists. Broker and store first,
then the broker topology (so no event can be published before the queues
that must receive it exist), then one process per service, then the front
door. Ready means every service's ``/readyz`` answers 200, which includes
its consumers being attached. Stopping runs the other way round: services
first, so nothing is left consuming from a broker that is going away.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shequ import accounts
from shequ.auth import new_secret
from shequ.bureau import BureauError, management_from
from shequ.config import load_config
from shequ.discovery import DEFAULTS, discover_services, load_service
from shequ.embedded import EmbeddedError, RabbitMQNode, SecantusServer, free_port
from shequ.events import retry_delays
from shequ.frontdoor import FrontDoor
from shequ.topology import declare_topology

log = logging.getLogger(__name__)

SECRET_FILE = "jwt-secret"  # noqa: S105 - a file name, not a secret
SIGNING_KEY_FILE = "disclosure-signing-key"
#: Services that seal personal data at rest (``shequ.sealing``), each with its own keys,
#: kept in ``<service>-key`` and ``<service>-index-key`` in the data directory.
SEALING_SERVICES = ("mediation", "notify", "volunteer")
#: Names this stack's broker users on a broker other stacks may share.
ACCOUNT_SUFFIX_FILE = "broker-account-suffix"
#: The embedded SecantusDB's administrator (the stack's and the tools' account).
STORE_ADMIN = "shequ-admin"
STORE_ADMIN_PASSWORD_FILE = "store-admin-password"  # noqa: S105 - a file name
#: The development data key's id; production names its keys (and rotates them) itself.
DEV_KID = "dev1"
ENDPOINTS_FILE = "endpoints.json"


class StackError(RuntimeError):
    """The stack could not be brought up; the message says which part and why."""


@dataclass
class ServiceProcess:
    name: str
    port: int
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Stack:
    data_dir: Path
    port: int = 8080
    host: str = "127.0.0.1"
    services: list[str] | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    # External servers: when given (or set as SHEQU_AMQP_URI / SHEQU_MONGO_URI),
    # no embedded broker or store is started.
    amqp_uri: str = ""
    mongo_uri: str = ""
    #: The external broker's management API (or SHEQU_RABBITMQ_MANAGEMENT_URL),
    #: to give each service its own account there; the embedded one's is known.
    management_url: str = ""

    def __post_init__(self) -> None:
        self.data_dir = self.data_dir.resolve()
        self.rabbit: RabbitMQNode | None = None
        self.store: SecantusServer | None = None
        self.processes: dict[str, ServiceProcess] = {}
        self.front_door: FrontDoor | None = None
        self._specs: dict[str, str] = {}
        #: Each service's own AMQP URI (its broker account), once provisioned.
        self.service_amqp_uris: dict[str, str] = {}
        #: Each service's own MongoDB URI, on the embedded store only.
        self.service_mongo_uris: dict[str, str] = {}
        self._account_suffix = ""
        self.ready_seconds = 0.0

    # -- start -----------------------------------------------------------
    def start(self, timeout: float = 180.0) -> None:
        started = time.monotonic()
        deadline = started + timeout
        self._check_port_free()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._start_servers()
            env = self._service_env()
            classes = self._service_classes()
            defaults = load_config(DEFAULTS, {**os.environ, **env})
            delays = retry_delays(defaults)
            queues = declare_topology(self.amqp_uri, classes.values(), delays, defaults)
            log.info("declared %d handler queues for %d services", queues, len(classes))
            self._provision_accounts(classes.values())
            if self.store is not None:
                self.service_mongo_uris = accounts.provision_database_users(
                    self.mongo_uri,
                    classes,
                    {**os.environ, **env}.get("SHEQU_MONGO_DATABASE_PREFIX", ""),
                    self.store.uri_for,
                )
            logs = self.data_dir / "logs"
            logs.mkdir(exist_ok=True)
            for name in classes:
                proc = ServiceProcess(name, free_port(self.host), logs / f"{name}.log")
                self.processes[name] = proc
                self._spawn(proc, env)
            self.front_door = FrontDoor(
                self.host,
                self.port,
                {n: p.url for n, p in self.processes.items()},
                max_body=int(defaults["MAX_BODY_BYTES"]),
            )
            self.front_door.start()
            self._wait_ready(deadline)
        except BaseException:
            self.stop()
            raise
        self.ready_seconds = time.monotonic() - started
        self._write_endpoints()

    def _check_port_free(self) -> None:
        """Fail before booting anything when the front door's port is taken."""
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((self.host, self.port))
            except OSError as exc:
                raise StackError(
                    f"the front door cannot listen on {self.host}:{self.port} "
                    f"({exc.strerror}); choose another port with --port"
                ) from exc

    def _start_servers(self) -> None:
        self.amqp_uri = self.amqp_uri or os.environ.get("SHEQU_AMQP_URI", "")
        self.mongo_uri = self.mongo_uri or os.environ.get("SHEQU_MONGO_URI", "")
        try:
            if not self.amqp_uri:
                self.rabbit = RabbitMQNode(self.data_dir / "rabbitmq")
                self.rabbit.start()
                self.amqp_uri = self.rabbit.amqp_uri
            if not self.mongo_uri:
                # With authentication: each service gets a user of its own.
                password = self._kept_secret(
                    STORE_ADMIN_PASSWORD_FILE, lambda: secrets.token_urlsafe(24)
                )
                self.store = SecantusServer(
                    self.data_dir / "secantus", admin=(STORE_ADMIN, password)
                )
                self.store.start()
                self.mongo_uri = self.store.mongo_uri
        except EmbeddedError as exc:
            raise StackError(str(exc)) from exc

    def _provision_accounts(self, classes: Iterable[type]) -> None:
        """One broker user per service, limited to its own exchanges and queues.

        The stack's own URI stays the administrator's: it declared the
        topology, and the operators' tools read it from ``endpoints.json``.
        On the embedded broker the users are ``shequ-<service>``; on an
        external one, which other stacks may share, they carry a suffix kept
        in the data directory.
        """
        management_url = self.management_url or os.environ.get("SHEQU_RABBITMQ_MANAGEMENT_URL", "")
        if self.rabbit is not None:
            management_url = self.rabbit.management_url
        else:
            self._account_suffix = self._kept_secret(
                ACCOUNT_SUFFIX_FILE, lambda: secrets.token_hex(3)
            )
        if not management_url:
            log.warning(
                "no RabbitMQ management URL (SHEQU_RABBITMQ_MANAGEMENT_URL): every service "
                "connects with the stack's own broker account"
            )
            return
        self.management_url = management_url
        management, vhost = management_from(management_url, self.amqp_uri)
        try:
            self.service_amqp_uris = accounts.provision(
                management, vhost, self.amqp_uri, classes, self._account_suffix
            )
        except BureauError as exc:
            raise StackError(f"cannot create the services' broker accounts: {exc}") from exc

    def _service_classes(self) -> dict[str, type]:
        """Service classes by name: every registered one, or those asked for."""
        wanted = self.services or sorted(discover_services())
        classes = {}
        for spec in wanted:
            try:
                service_cls = load_service(spec)
            except (LookupError, ImportError, AttributeError) as exc:
                raise StackError(f"cannot load service {spec!r}: {exc}") from exc
            classes[service_cls.name] = service_cls
            self._specs[service_cls.name] = spec
        return classes

    def jwt_secret(self) -> str:
        return self._kept_secret(SECRET_FILE, new_secret)

    def disclosure_signing_key(self) -> str:
        """The dev log's Ed25519 key: 32 random bytes are a valid seed, as base64."""
        return self._kept_secret(
            SIGNING_KEY_FILE, lambda: base64.b64encode(secrets.token_bytes(32)).decode("ascii")
        )

    def field_keys(self, service: str) -> dict[str, str]:
        """The dev keys sealing ``service``'s personal data: a data key (``dev1``), an index key."""

        def new_key() -> str:
            return base64.b64encode(secrets.token_bytes(32)).decode("ascii")

        prefix = f"SHEQU_{service.upper()}"
        data_key = self._kept_secret(f"{service}-key", new_key)
        return {
            f"{prefix}_KEYS": f"{DEV_KID}:{data_key}",
            f"{prefix}_ACTIVE_KEY": DEV_KID,
            f"{prefix}_INDEX_KEY": self._kept_secret(f"{service}-index-key", new_key),
        }

    def _kept_secret(self, name: str, generate: Callable[[], str]) -> str:
        """A secret generated once per data directory, so restarts keep it."""
        path = self.data_dir / name
        if not path.exists():
            path.write_text(generate(), encoding="utf-8")
            path.chmod(0o600)
        return path.read_text(encoding="utf-8").strip()

    def _service_env(self) -> dict[str, str]:
        env = {
            "SHEQU_AMQP_URI": self.amqp_uri,
            "SHEQU_MONGO_URI": self.mongo_uri,
            "SHEQU_JWT_SECRET": os.environ.get("SHEQU_JWT_SECRET") or self.jwt_secret(),
            "SHEQU_DISCLOSURE_SIGNING_KEY": os.environ.get("SHEQU_DISCLOSURE_SIGNING_KEY")
            or self.disclosure_signing_key(),
        }
        for service in SEALING_SERVICES:
            if not os.environ.get(f"SHEQU_{service.upper()}_KEYS"):
                env.update(self.field_keys(service))
        env.update(self.extra_env)
        return env

    def _spawn(self, proc: ServiceProcess, env: dict[str, str]) -> None:
        if proc.name in self.service_amqp_uris:
            env = {**env, "SHEQU_AMQP_URI": self.service_amqp_uris[proc.name]}
        if proc.name in self.service_mongo_uris:
            env = {**env, "SHEQU_MONGO_URI": self.service_mongo_uris[proc.name]}
        handle = proc.log_path.open("ab")
        proc.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "shequ.runner",
                self._specs.get(proc.name, proc.name),
                "--http",
                f"{self.host}:{proc.port}",
            ],
            env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        handle.close()

    def _wait_ready(self, deadline: float) -> None:
        pending = set(self.processes)
        while pending:
            for name in sorted(pending):
                proc = self.processes[name]
                if proc.process is not None and proc.process.poll() is not None:
                    raise StackError(
                        f"service {name} exited with code {proc.process.returncode} while "
                        f"starting; its log is {proc.log_path}:\n{_tail(proc.log_path)}"
                    )
                if _http_ok(f"{proc.url}/readyz"):
                    pending.discard(name)
            if not pending:
                return
            if time.monotonic() > deadline:
                raise StackError(f"services not ready in time: {', '.join(sorted(pending))}")
            time.sleep(0.2)

    # -- run and stop -------------------------------------------------------
    def supervise_once(self) -> list[str]:
        """Restart services that died; return their names (called by ``shequ up``)."""
        restarted = []
        env = self._service_env()
        for proc in self.processes.values():
            if proc.process is not None and proc.process.poll() is not None:
                log.warning(
                    "service %s exited with %s; restarting", proc.name, proc.process.returncode
                )
                proc.restarts += 1
                self._spawn(proc, env)
                restarted.append(proc.name)
        return restarted

    def stop(self) -> None:
        for proc in self.processes.values():
            if proc.process is not None and proc.process.poll() is None:
                proc.process.send_signal(signal.SIGTERM)
        for proc in self.processes.values():
            if proc.process is None:
                continue
            try:
                proc.process.wait(timeout=25)
            except subprocess.TimeoutExpired:
                log.warning("service %s did not stop in time; killing it", proc.name)
                os.killpg(proc.process.pid, signal.SIGKILL)
                proc.process.wait(timeout=10)
        if self.front_door is not None:
            self.front_door.stop()
            self.front_door = None
        if self.service_amqp_uris and self.rabbit is None:
            # An external broker outlives the stack: leave no users behind.
            management, _ = management_from(self.management_url, self.amqp_uri)
            accounts.remove(management, self.service_amqp_uris, self._account_suffix)
            self.service_amqp_uris = {}
        if self.rabbit is not None:
            self.rabbit.stop()
        if self.store is not None:
            self.store.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def endpoints(self) -> dict[str, Any]:
        return {
            "front_door": self.url,
            "amqp_uri": self.amqp_uri,
            "mongo_uri": self.mongo_uri,
            "rabbitmq_management": self.rabbit.management_url if self.rabbit else None,
            "services": {
                name: {
                    "http": proc.url,
                    "broker_user": accounts.user_name(name, self._account_suffix)
                    if name in self.service_amqp_uris
                    else None,
                    "database_user": accounts.user_name(name)
                    if name in self.service_mongo_uris
                    else None,
                    "metrics": f"{proc.url}/metrics",
                    "log": str(proc.log_path),
                }
                for name, proc in self.processes.items()
            },
            "ready_seconds": round(self.ready_seconds, 2),
        }

    def _write_endpoints(self) -> None:
        path = self.data_dir / ENDPOINTS_FILE
        path.write_text(json.dumps(self.endpoints(), indent=2), encoding="utf-8")
        # The administrators' URIs, with their passwords: for the owner only.
        path.chmod(0o600)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback URL
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
