"""Private, loopback-only RabbitMQ and SecantusDB servers run as child processes.

Why this exists: the dev stack and the integration tests need a real broker and
a real document store, but they must neither depend on nor disturb whatever
system services happen to run on the machine. Each server started here

* listens on 127.0.0.1 only, on ports chosen free at start (or given),
* keeps all of its state, configuration and logs under one data directory, so
  restarting on the same directory keeps the data and deleting it forgets it,
* ignores system-wide configuration (``/etc/rabbitmq``, ``~/.secantus``, ...),
* runs in its own session, so a Ctrl-C in the parent's terminal does not kill
  it before the parent can stop it in order, and
* is stopped without leaving any process behind (RabbitMQ's Erlang VM starts a
  port-mapper daemon, ``epmd``; each node gets a private one on a free port,
  which is killed together with the node).

Readiness is established by polling with a bound (a real AMQP connection, a
real ``hello`` command), never by fixed sleeps. Only ``subprocess`` and plain
polling are used (no threads), so this also works in an eventlet-patched
process.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import pathlib
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import uuid
from types import TracebackType
from typing import IO, Any, Self

import pika
import pika.exceptions
import pymongo
import pymongo.errors
from pika.adapters.utils.connection_workflow import AMQPConnectorException

__all__ = ["EmbeddedError", "RabbitMQNode", "SecantusServer", "free_port"]

LOOPBACK = "127.0.0.1"

#: Where Debian's ``rabbitmq-server`` package keeps the real start scripts. The
#: ``/usr/sbin`` wrappers switch to the ``rabbitmq`` user when run as root, which
#: then cannot write a private data dir, so the scripts here are called directly.
RABBITMQ_BIN_DIR = pathlib.Path("/usr/lib/rabbitmq/bin")

#: Console script of the SecantusDB package that runs a standalone server.
SECANTUSD_SCRIPT = "secantusd-py"

#: Environment variable marking every process spawned for one start() of one
#: server, so that stop() can find (and end) stragglers that left the process
#: group, such as the ``epmd`` daemon.
_MARKER_VAR = "SHEQU_EMBEDDED_MARK"

_POLL_INTERVAL = 0.2
_LOG_TAIL_LINES = 30


class EmbeddedError(RuntimeError):
    """An embedded server could not be found, started or stopped."""


#: Ports handed out by ``free_port`` are drawn from here: below the range the
#: kernel takes outgoing connections' local ports from
#: (``net.ipv4.ip_local_port_range``, 32768 to 60999 by default). A port the
#: kernel picked for port 0 lies inside that range, so between the pick and
#: the server's own bind any outgoing connection could be given it: a
#: service once failed to start in the fault suite with "Address already in
#: use" on its http port.
PORT_RANGE = range(20000, 32768)


def free_port(host: str = LOOPBACK) -> int:
    """Return a TCP port that is free on ``host`` right now, outside the ephemeral range."""
    return _free_ports(1, host)[0]


def _free_ports(count: int, host: str = LOOPBACK, exclude: set[int] | None = None) -> list[int]:
    """Return ``count`` distinct free ports, none of them in ``exclude``.

    Each is tried by binding it; the sockets are held open together so one
    call cannot hand out the same port twice.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    exclude = exclude or set()
    candidates = [port for port in PORT_RANGE if port not in exclude]
    random.shuffle(candidates)
    sockets: list[socket.socket] = []
    ports: list[int] = []
    try:
        for port in candidates:
            if len(ports) == count:
                return ports
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            try:
                sock.bind((host, port))
            except OSError:
                continue  # in use
            ports.append(port)
        if len(ports) == count:
            return ports
        raise EmbeddedError(
            f"no {count} free ports on {host} between {PORT_RANGE.start} and {PORT_RANGE.stop - 1}"
        )
    finally:
        for sock in sockets:
            sock.close()


def _port_accepts(port: int, host: str = LOOPBACK) -> bool:
    """Whether a TCP connection to ``host:port`` succeeds right now."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _tail(paths: list[pathlib.Path], lines: int = _LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of each existing file, for error messages."""
    parts = []
    for path in paths:
        try:
            with path.open("rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 16384))
                text = f.read().decode("utf-8", "replace")
        except OSError:
            continue
        last = "\n".join(text.splitlines()[-lines:])
        if last.strip():
            parts.append(f"--- {path} ---\n{last}")
    return "\n".join(parts) if parts else "(no log output)"


def _pids_with_env(entry: str) -> list[int]:
    """Pids of live processes whose environment contains ``entry`` (Linux /proc only)."""
    needle = entry.encode()
    found = []
    proc = pathlib.Path("/proc")
    if not proc.is_dir():
        return found
    for child in proc.iterdir():
        if not child.name.isdigit() or int(child.name) == os.getpid():
            continue
        try:
            environ = (child / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            found.append(int(child.name))
    return found


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return stat.rpartition(")")[2].split()[0] != "Z"


def _wait_gone(pids: list[int], deadline: float) -> list[int]:
    """Poll until none of ``pids`` is alive or ``deadline`` passes; return the survivors."""
    alive = [p for p in pids if pid_alive(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [p for p in alive if pid_alive(p)]
    return alive


class _ChildServer:
    """Process handling shared by the servers: spawn, lock, stop, sweep."""

    _what = "server"

    def __init__(self, data_dir: pathlib.Path) -> None:
        self.data_dir = pathlib.Path(data_dir).resolve()
        #: Pid of the spawned child (leader of its own process group) while started.
        self.pid: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock: IO[bytes] | None = None
        self._mark = ""

    # -- context manager ---------------------------------------------------
    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self, timeout: float = 60.0) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def stop(self, timeout: float = 20.0) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    @property
    def running(self) -> bool:
        """Whether the child process was started and has not exited."""
        return self._proc is not None and self._proc.poll() is None

    # -- helpers -------------------------------------------------------------
    def _acquire_lock(self) -> None:
        """Refuse to run two servers on one data dir from live parents."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        lock = (self.data_dir / "embedded.lock").open("ab")
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()
            raise EmbeddedError(
                f"{self.data_dir} is already in use by another running embedded {self._what}"
            ) from None
        self._lock = lock

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def _spawn(self, argv: list[str], env: dict[str, str], log_path: pathlib.Path) -> None:
        self._mark = uuid.uuid4().hex
        env = {**env, _MARKER_VAR: self._mark}
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                argv,
                env=env,
                cwd=self.data_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pid = self._proc.pid

    def _wait_exit(self, deadline: float) -> bool:
        """Poll until the child exits or ``deadline`` passes; True if it exited."""
        assert self._proc is not None
        while self._proc.poll() is None:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    def _kill_group(self) -> None:
        """SIGKILL the child's whole process group (best effort)."""
        if self._proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, signal.SIGKILL)

    def _sweep(self, deadline: float) -> None:
        """End every process still carrying this start's mark, then forget the child."""
        if self._proc is not None:
            if self._proc.poll() is None:
                self._kill_group()
                self._wait_exit(time.monotonic() + 5)
            # Members of the group may outlive the leader; the group id stays
            # reserved while any of them exists, so this cannot hit a stranger.
            self._kill_group()
        if self._mark:
            strays = _pids_with_env(f"{_MARKER_VAR}={self._mark}")
            for pid in strays:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGTERM)
            left = _wait_gone(strays, min(deadline, time.monotonic() + 3))
            for pid in left:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            _wait_gone(left, time.monotonic() + 2)
        self._proc = None
        self.pid = None
        self._mark = ""
        self._release_lock()


class RabbitMQNode(_ChildServer):
    """A private RabbitMQ node (with the management plugin) on loopback ports.

    Layout under ``data_dir``: ``etc/`` (generated configuration), ``home/``
    (the Erlang cookie), ``mnesia/`` (the node's data), ``log/`` (node log and
    console output). Ports left as None are chosen free at every ``start()``, so
    read ``amqp_uri`` after starting. ``pid`` is the start script's pid, the
    leader of the process group holding the Erlang VM.
    """

    _what = "RabbitMQ node"

    def __init__(
        self,
        data_dir: pathlib.Path,
        *,
        amqp_port: int | None = None,
        management_port: int | None = None,
        dist_port: int | None = None,
        node_name: str | None = None,
    ) -> None:
        super().__init__(data_dir)
        self._fixed = {"amqp": amqp_port, "management": management_port, "dist": dist_port}
        self.amqp_port = amqp_port
        self.management_port = management_port
        self.dist_port = dist_port
        self.epmd_port: int | None = None
        # Stable per data dir: the node finds its own data again after a restart.
        digest = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:8]
        self.node_name = node_name or f"shequ-{digest}@localhost"
        self.log_dir = self.data_dir / "log"
        self._etc = self.data_dir / "etc"
        self._pid_file = self.data_dir / "rabbitmq.pid"

    @property
    def amqp_uri(self) -> str:
        """AMQP URI for the default ``guest`` user (allowed because we connect via loopback)."""
        return f"amqp://guest:guest@{LOOPBACK}:{self._port('amqp_port')}/"

    @property
    def management_url(self) -> str:
        """Base URL of the management HTTP API and UI."""
        return f"http://{LOOPBACK}:{self._port('management_port')}"

    @property
    def node_log(self) -> pathlib.Path:
        """The node's own log file."""
        return self.log_dir / f"{self.node_name}.log"

    @property
    def console_log(self) -> pathlib.Path:
        """Console output of the start script and the Erlang VM."""
        return self.log_dir / "console.log"

    def _port(self, attr: str) -> int:
        port = getattr(self, attr)
        if port is None:
            raise EmbeddedError(f"the RabbitMQ node has no {attr} yet: call start() first")
        return port

    def start(self, timeout: float = 90.0) -> None:
        """Spawn the node and return once it accepts AMQP connections."""
        if self.running:
            return
        server = RABBITMQ_BIN_DIR / "rabbitmq-server"
        if not os.access(server, os.X_OK) or not os.access(self._ctl, os.X_OK):
            raise EmbeddedError(
                f"RabbitMQ is not installed ({server} not found): install Debian's "
                "rabbitmq-server (apt-get install rabbitmq-server)"
            )
        self._acquire_lock()
        try:
            self._refuse_stale_node()
            self._choose_ports()
            self._write_config()
            self._spawn([str(server)], self._env(), self.console_log)
            self._wait_ready(time.monotonic() + timeout, timeout)
        except BaseException:
            self._sweep(time.monotonic() + 10)
            raise

    def keep_ports(self) -> None:
        """Start again on the ports in use now, so clients find it at the same URI."""
        self._fixed.update(
            amqp=self.amqp_port, management=self.management_port, dist=self.dist_port
        )

    def restart(self, timeout: float = 90.0) -> None:
        """Stop and start again on the same ports and data: clients reconnect to the same URI."""
        self.keep_ports()
        self.stop()
        self.start(timeout)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the node in order (``rabbitmqctl stop``), by force if it overstays."""
        if self._proc is None:
            return
        deadline = time.monotonic() + timeout
        if self._proc.poll() is None:
            self._rabbitmqctl("stop", deadline=deadline)
            if not self._wait_exit(deadline):
                self._kill_group()
        self._kill_epmd()
        self._sweep(deadline + 5)

    # -- internals -------------------------------------------------------------
    @property
    def _ctl(self) -> pathlib.Path:
        return RABBITMQ_BIN_DIR / "rabbitmqctl"

    def _refuse_stale_node(self) -> None:
        """Fail clearly if a node from an earlier, killed parent still uses this data dir.

        The node name is not on the Erlang VM's command line (RabbitMQ starts
        distribution from the environment), so the environment is what tells.
        """
        mine = f"RABBITMQ_MNESIA_BASE={self.data_dir / 'mnesia'}"
        for pid in _pids_with_env(mine):
            try:
                comm = pathlib.Path(f"/proc/{pid}/comm").read_text().strip()
            except OSError:
                continue
            if comm.startswith("beam") and pid_alive(pid):
                raise EmbeddedError(
                    f"a RabbitMQ node from an earlier run still uses {self.data_dir} "
                    f"(pid {pid}); stop or kill it first"
                )

    def _choose_ports(self) -> None:
        fixed = {p for p in self._fixed.values() if p is not None}
        auto = iter(_free_ports(4, exclude=fixed))
        self.amqp_port = self._fixed["amqp"] or next(auto)
        self.management_port = self._fixed["management"] or next(auto)
        # RabbitMQ would default to AMQP port + 20000, which may be taken.
        self.dist_port = self._fixed["dist"] or next(auto)
        self.epmd_port = next(auto)

    def _write_config(self) -> None:
        for path in (self._etc / "conf.d", self.data_dir / "home", self.data_dir / "mnesia"):
            path.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        (self._etc / "rabbitmq.conf").write_text(
            "# Generated by shequ.embedded at every start; edits are lost.\n"
            f"listeners.tcp.1 = {LOOPBACK}:{self.amqp_port}\n"
            f"management.tcp.ip = {LOOPBACK}\n"
            f"management.tcp.port = {self.management_port}\n"
            "log.console = false\n"
            "log.file.level = info\n"
        )
        (self._etc / "enabled_plugins").write_text("[rabbitmq_management].\n")
        # Empty stand-in for /etc/rabbitmq/rabbitmq-env.conf.
        (self._etc / "rabbitmq-env.conf").write_text("")

    def _env(self, ctl_port: int | None = None) -> dict[str, str]:
        """Environment shared by the server and rabbitmqctl (cookie, epmd, node name)."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("RABBITMQ_", "ERL_")) and k != _MARKER_VAR
        }
        loopback_dist = "-kernel inet_dist_use_interface {127,0,0,1}"
        env.update(
            HOME=str(self.data_dir / "home"),
            ERL_EPMD_PORT=str(self.epmd_port),
            ERL_EPMD_ADDRESS=LOOPBACK,
            RABBITMQ_NODENAME=self.node_name,
            RABBITMQ_MNESIA_BASE=str(self.data_dir / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.log_dir),
            RABBITMQ_CONFIG_FILE=str(self._etc / "rabbitmq.conf"),
            # Keep /etc/rabbitmq out: conf.d, advanced.config and rabbitmq-env.conf.
            RABBITMQ_CONFIG_FILES=str(self._etc / "conf.d"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(self._etc / "advanced.config"),
            RABBITMQ_CONF_ENV_FILE=str(self._etc / "rabbitmq-env.conf"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self._etc / "enabled_plugins"),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_PID_FILE=str(self._pid_file),
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=loopback_dist,
            RABBITMQ_CTL_ERL_ARGS=loopback_dist,
        )
        if ctl_port is not None:
            env.update(
                RABBITMQ_CTL_DIST_PORT_MIN=str(ctl_port),
                RABBITMQ_CTL_DIST_PORT_MAX=str(ctl_port),
            )
        if self._mark:
            env[_MARKER_VAR] = self._mark
        return env

    def _wait_ready(self, deadline: float, timeout: float) -> None:
        assert self._proc is not None
        while True:
            code = self._proc.poll()
            if code is not None:
                raise EmbeddedError(
                    f"RabbitMQ node {self.node_name} exited with code {code} while starting; "
                    f"log tail:\n{self._log_tail()}"
                )
            if (
                _port_accepts(self._port("amqp_port"))
                and _port_accepts(self._port("management_port"))
                and self._amqp_handshake()
            ):
                return
            if time.monotonic() >= deadline:
                raise EmbeddedError(
                    f"RabbitMQ node {self.node_name} did not accept AMQP connections on "
                    f"{LOOPBACK}:{self.amqp_port} within {timeout:g} s; log tail:\n"
                    f"{self._log_tail()}"
                )
            time.sleep(_POLL_INTERVAL)

    def _amqp_handshake(self) -> bool:
        params = pika.ConnectionParameters(
            host=LOOPBACK,
            port=self._port("amqp_port"),
            credentials=pika.PlainCredentials("guest", "guest"),
            connection_attempts=1,
            socket_timeout=2,
            stack_timeout=5,
            blocked_connection_timeout=5,
        )
        try:
            pika.BlockingConnection(params).close()
        except (pika.exceptions.AMQPError, AMQPConnectorException, OSError):
            return False
        return True

    def _log_tail(self) -> str:
        return _tail([self.console_log, self.node_log])

    def _rabbitmqctl(self, *args: str, deadline: float) -> bool:
        """Run rabbitmqctl against this node; True if it succeeded in time."""
        argv = [str(self._ctl), "-n", self.node_name, *args]
        remaining = max(1.0, deadline - time.monotonic())
        try:
            done = subprocess.run(
                argv,
                env=self._env(ctl_port=free_port()),
                cwd=self.data_dir,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                timeout=remaining,
                start_new_session=True,
                check=False,
            )
        except (subprocess.TimeoutExpired, OSError):
            return False
        return done.returncode == 0

    def _kill_epmd(self) -> None:
        """Ask the node's private epmd to exit (it daemonized, so it left our group)."""
        epmd = shutil.which("epmd")
        if epmd is None or self.epmd_port is None:
            return
        with contextlib.suppress(subprocess.TimeoutExpired, OSError):
            subprocess.run(
                [epmd, "-kill"],
                env=self._env(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=5,
                check=False,
            )


class SecantusServer(_ChildServer):
    """A private SecantusDB server (MongoDB wire protocol) on a loopback port.

    Layout under ``data_dir``: ``store/`` (the data), ``secantusd.toml`` (a
    minimal configuration, passed explicitly so no other file is discovered)
    and ``secantusd.log`` (the server's output).
    """

    _what = "SecantusDB server"

    def __init__(
        self,
        data_dir: pathlib.Path,
        *,
        port: int | None = None,
        admin: tuple[str, str] | None = None,
        oplog_entries: int | None = None,
    ) -> None:
        super().__init__(data_dir)
        self._fixed_port = port
        #: How many operations the server's oplog keeps, and with it how far
        #: back a change stream can resume (its default: 100,000).
        self.oplog_entries = oplog_entries
        self.port = port
        self.log_dir = self.data_dir
        self.log_file = self.data_dir / "secantusd.log"
        #: With ``admin`` (user, password) the server requires SCRAM
        #: authentication; that user, created at the first start, has ``root``.
        self.admin = admin
        self._auth_marker = self.data_dir / "auth-enabled"

    @property
    def mongo_uri(self) -> str:
        """URI for pymongo; ``directConnection`` since there is a single node."""
        return self.uri_for(*self.admin) if self.admin else self.uri_for()

    def uri_for(self, user: str = "", password: str = "") -> str:
        """The URI of this server, with a user's credentials (``authSource=admin``) if given.

        Without retryable writes (``retryWrites=false``). SecantusDB keeps the
        reply of every retryable write in memory for 30 minutes, up to
        10,000, and at each such write scans them all, and past 10,000 sorts
        them (0.7.0b3, ``TransactionRegistry._prune_retryable_locked``,
        found with py-spy): single-document inserts from 8 threads fell from
        1,024 a second to about 100 within 10,000 writes, and stayed there
        (docs/performance.md). Without them they held 1,640 to 1,920 a
        second over 72,000. What a retry would save here is a write whose
        reply was lost on loopback to a live server; the records do not
        outlive the server anyway. Transactions are not affected: the
        driver retries a commit once whatever this says, and every effect
        that an event or a delivery depends on is written in one.
        Production's replica set keeps retryable writes (docs/deploy.md).
        """
        if self.port is None:
            raise EmbeddedError("the SecantusDB server has no port yet: call start() first")
        options = "directConnection=true&retryWrites=false"
        if not user:
            return f"mongodb://{LOOPBACK}:{self.port}/?{options}"
        quoted = f"{urllib.parse.quote(user, safe='')}:{urllib.parse.quote(password, safe='')}"
        return f"mongodb://{quoted}@{LOOPBACK}:{self.port}/?{options}&authSource=admin"

    def start(self, timeout: float = 60.0) -> None:
        """Spawn the server and return once it answers ``hello``.

        With authentication asked for, the first start of a data directory
        runs once without it to create the administrator (secantusd, like
        mongod without its localhost exception, accepts ``createUser`` only
        then) and starts again with ``--auth``.
        """
        if self.running:
            return
        if self.admin and not self._auth_marker.exists():
            self._start(timeout, auth=False)
            try:
                client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
                    self.uri_for(), serverSelectionTimeoutMS=10000
                )
                try:
                    user, password = self.admin
                    client.admin.command(
                        "createUser", user, pwd=password, roles=[{"role": "root", "db": "admin"}]
                    )
                finally:
                    client.close()
            finally:
                self.stop()
            self._auth_marker.write_text("")
        self._start(timeout, auth=bool(self.admin))

    def _start(self, timeout: float, auth: bool) -> None:
        script = _find_secantusd()
        self._acquire_lock()
        try:
            self.port = self._fixed_port or free_port()
            config = self.data_dir / "secantusd.toml"
            config.write_text(
                "# Generated by shequ.embedded at every start; edits are lost.\n"
                "[server]\n"
                f'host = "{LOOPBACK}"\n'
            )
            argv = [
                str(script),
                "--config",
                str(config),
                "--host",
                LOOPBACK,
                "--port",
                str(self.port),
                "--storage-path",
                str(self.data_dir / "store"),
                *(["--auth"] if auth else []),
                *([f"--oplog-max-entries={self.oplog_entries}"] if self.oplog_entries else []),
            ]
            env = {k: v for k, v in os.environ.items() if k != _MARKER_VAR}
            env["PYTHONUNBUFFERED"] = "1"
            self._spawn(argv, env, self.log_file)
            self._wait_ready(time.monotonic() + timeout, timeout)
        except BaseException:
            self._sweep(time.monotonic() + 10)
            raise

    def keep_port(self) -> None:
        """Start again on the port in use now, so clients find it at the same URI."""
        self._fixed_port = self.port

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the server (it shuts down in order), SIGKILL if it overstays."""
        if self._proc is None:
            return
        deadline = time.monotonic() + timeout
        if self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.send_signal(signal.SIGTERM)
            if not self._wait_exit(deadline):
                self._kill_group()
        self._sweep(deadline + 5)

    def _wait_ready(self, deadline: float, timeout: float) -> None:
        assert self._proc is not None and self.port is not None
        while True:
            code = self._proc.poll()
            if code is not None:
                raise EmbeddedError(
                    f"secantusd-py exited with code {code} while starting; log tail:\n"
                    f"{_tail([self.log_file])}"
                )
            if _port_accepts(self.port) and self._hello():
                return
            if time.monotonic() >= deadline:
                raise EmbeddedError(
                    f"SecantusDB did not answer hello on {LOOPBACK}:{self.port} within "
                    f"{timeout:g} s; log tail:\n{_tail([self.log_file])}"
                )
            time.sleep(_POLL_INTERVAL)

    def _hello(self) -> bool:
        # No credentials: hello needs none, and at the first start there are no users yet.
        client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(
            self.uri_for(),
            serverSelectionTimeoutMS=2000,
            connectTimeoutMS=1000,
            socketTimeoutMS=2000,
        )
        try:
            client.admin.command("hello")
        except pymongo.errors.PyMongoError:
            return False
        finally:
            client.close()
        return True


def _find_secantusd() -> pathlib.Path:
    """The ``secantusd-py`` script of this interpreter's environment, else the one on PATH."""
    beside = pathlib.Path(sys.executable).parent / SECANTUSD_SCRIPT
    if os.access(beside, os.X_OK):
        return beside
    found = shutil.which(SECANTUSD_SCRIPT)
    if found is None:
        raise EmbeddedError(
            f"{SECANTUSD_SCRIPT} was found neither next to {sys.executable} nor on PATH: "
            "install SecantusDB into this environment (pip install SecantusDB)"
        )
    return pathlib.Path(found)
