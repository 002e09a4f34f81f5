"""The ``shequ`` command: run the platform and operate it."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import urllib.parse
import warnings
from pathlib import Path
from typing import Any

from shequ.auth import PURPOSES, ROLES, mint_token

# nameko imports eventlet, which warns on import; the CLI process never runs it.
warnings.filterwarnings("ignore", message=r"(?s).*Eventlet is deprecated")

DEFAULT_DATA_DIR = Path(os.environ.get("SHEQU_DATA_DIR", ".shequ"))


def _add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help="where the embedded broker and store keep their data (default: %(default)s)",
    )


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    return stop


def cmd_up(args: argparse.Namespace, demo: bool = False) -> int:
    from shequ.demo import demo_env
    from shequ.stack import Stack, StackError

    extra_env = demo_env(args.data_dir) if demo else {}
    stack = Stack(args.data_dir, port=args.port, extra_env=extra_env)
    stop = _stop_on_signals()
    print(f"starting shequ in {stack.data_dir} ...", flush=True)
    try:
        stack.start()
    except StackError as exc:
        print(f"shequ: {exc}", file=sys.stderr)
        return 1
    print(f"shequ ready: {stack.url}   (in {stack.ready_seconds:.1f} s)", flush=True)
    code = 0
    try:
        _print_endpoints(stack)
        if demo:
            code = _play_demo(stack)
        if getattr(args, "exit", False):
            return code
        print("serving; press Ctrl-C to stop", flush=True)
        while not stop.wait(1.0):
            stack.supervise_once()
    finally:
        print("stopping services, broker and store ...", flush=True)
        stack.stop()
        print("stopped", flush=True)
    return code


def _without_password(uri: str) -> str:
    parts = urllib.parse.urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def _print_endpoints(stack: object) -> None:
    endpoints = stack.endpoints()  # type: ignore[attr-defined]
    print(f"  front door      {endpoints['front_door']}")
    for name, urls in endpoints["services"].items():
        print(f"  {name:<15} {urls['http']}   metrics {urls['metrics']}")
    # Administrators' URIs: the password only in the endpoints file (mode 600).
    print(f"  amqp            {_without_password(endpoints['amqp_uri'])}")
    print(f"  mongodb         {_without_password(endpoints['mongo_uri'])}")
    print(f"  endpoints file  {stack.data_dir / 'endpoints.json'}", flush=True)  # type: ignore[attr-defined]


def _play_demo(stack: object) -> int:
    from shequ import demo

    url, secret = stack.url, stack.jwt_secret()  # type: ignore[attr-defined]
    print("time limits: the grid's policy, the acknowledge clock as an 8 s drill", flush=True)
    try:
        outcomes = demo.run_scenario(url, secret)
        print(demo.summary(outcomes), flush=True)
        work = demo.work_cases(url, secret, outcomes)
        print(demo.casework_summary(work), flush=True)
        print(demo.rate_closure(url, secret, work), flush=True)
        print(demo.escalation_summary(demo.watch_escalation(url, secret, outcomes)), flush=True)
        print(demo.notify_summary(demo.notifications(url, secret, outcomes)), flush=True)
        print(demo.rates_summary(demo.public_rates(url, secret, outcomes)), flush=True)
        print(demo.record_summary(demo.public_record(url, secret, outcomes)), flush=True)
        found = demo.reconciliation(stack.mongo_uri)  # type: ignore[attr-defined]
        print(demo.reconciliation_summary(found), flush=True)
    except demo.DemoError as exc:
        print(f"shequ demo: {exc}", file=sys.stderr)
        return 1
    missing = any(h is None for o in outcomes for h in o.hops.values())
    return 1 if missing or not found.clean else 0


def cmd_token(args: argparse.Namespace) -> int:
    secret = os.environ.get("SHEQU_JWT_SECRET")
    if not secret:
        path = args.data_dir / "jwt-secret"
        if not path.exists():
            print(
                f"shequ token: no secret in {path}; run `shequ up --data-dir {args.data_dir}` "
                "first or set SHEQU_JWT_SECRET",
                file=sys.stderr,
            )
            return 2
        secret = path.read_text(encoding="utf-8").strip()
    try:
        token = mint_token(
            secret,
            roles=args.role,
            sub=args.sub,
            communities=args.community or [],
            department=args.department,
            purpose=args.purpose,
            scopes=args.scope or [],
        )
    except ValueError as exc:
        print(f"shequ token: {exc}", file=sys.stderr)
        return 2
    print(token)
    return 0


def _server_uri(args: argparse.Namespace, server: str) -> str | None:
    """``SHEQU_<SERVER>_URI``, else the running stack's ``endpoints.json`` (``<server>_uri``)."""
    variable = f"SHEQU_{server.upper()}_URI"
    if os.environ.get(variable):
        return os.environ[variable]
    path = args.data_dir / "endpoints.json"
    if path.exists():
        return str(json.loads(path.read_text(encoding="utf-8"))[f"{server}_uri"])
    print(f"shequ: no running stack found ({path} is missing); set {variable}", file=sys.stderr)
    return None


def cmd_deadletters(args: argparse.Namespace) -> int:
    from shequ.deadletters import list_dead_letters, replay_dead_letters

    uri = _server_uri(args, "amqp")
    if uri is None:
        return 2
    if args.action == "list":
        letters = list_dead_letters(uri, args.service)
        for letter in letters:
            print(json.dumps({
                "message_id": letter.message_id, "type": letter.event_type,
                "subject": letter.subject, "queue": letter.queue,
                "attempts": letter.attempts, "error": letter.error,
            }, ensure_ascii=False))  # fmt: skip
        print(f"{len(letters)} dead letter(s) in {args.service}", file=sys.stderr)
        return 0
    count = replay_dead_letters(uri, args.service, args.id)
    print(f"replayed {count} dead letter(s) of {args.service}")
    return 0


def cmd_reconcile(args: argparse.Namespace) -> int:
    """Compare every report with every consumer's effects; exit 1 on a gap or a duplicate."""
    import time

    import pymongo
    from pymongo.errors import PyMongoError

    from shequ.discovery import discover_services, load_service
    from shequ.reconcile import reconcile

    uri = _server_uri(args, "mongo")
    if uri is None:
        return 2
    consumers = [load_service(name) for name in sorted(discover_services())]
    prefix = os.environ.get("SHEQU_MONGO_DATABASE_PREFIX")
    client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(
        uri, serverSelectionTimeoutMS=5000, tz_aware=True
    )
    deadline = time.monotonic() + args.wait
    try:
        while True:
            found = reconcile(client, prefix, consumers)
            if found.clean or time.monotonic() >= deadline:
                break
            time.sleep(1)
    except PyMongoError as exc:
        print(f"shequ reconcile: cannot read the databases: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()
    print(json.dumps(found.as_dict(), ensure_ascii=False, indent=2))
    return 0 if found.clean else 1


def cmd_audit(args: argparse.Namespace) -> int:
    """Anchor the services' audit trails, or check them for tampering (exit 1 if any shows)."""
    import pymongo
    from pymongo.errors import PyMongoError

    from shequ import audit
    from shequ.discovery import discover_services
    from shequ.store import database_name

    uri = _server_uri(args, "mongo")
    if uri is None:
        return 2
    known = sorted(discover_services())
    unknown = sorted(set(args.service) - set(known))
    if unknown:
        print(f"shequ audit: no service {', '.join(unknown)}; known: {', '.join(known)}",
              file=sys.stderr)  # fmt: skip
        return 2
    kept: dict[str, list[dict[str, Any]]] = {}
    if getattr(args, "anchors", None) is not None:
        try:
            kept = _read_anchors(args.anchors)
        except (OSError, ValueError) as exc:
            print(f"shequ audit: cannot read the anchors in {args.anchors}: {exc}",
                  file=sys.stderr)  # fmt: skip
            return 2
    prefix = os.environ.get("SHEQU_MONGO_DATABASE_PREFIX")
    client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(
        uri, serverSelectionTimeoutMS=5000, tz_aware=True
    )
    found: dict[str, dict[str, Any]] = {}
    try:
        for service in args.service or known:
            db = client[database_name(service, prefix)]
            if args.audit_action == "anchor":
                found[service] = audit.anchor(db)
                continue
            problems = audit.verify(db)
            for anchor in kept.get(service, []):
                problems += audit.check_anchor(db, anchor)
            found[service] = {
                "records": db[audit.AUDIT].estimated_document_count(),
                "anchors": len(kept.get(service, [])),
                "problems": problems,
            }
    except PyMongoError as exc:
        print(f"shequ audit: cannot read the databases: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()
    if args.audit_action == "anchor":
        # One line, so that a file of them (--append, or >>) keeps a history.
        line = json.dumps(found, sort_keys=True)
        if args.append is not None:
            try:
                with args.append.open("a", encoding="utf-8") as kept_file:
                    kept_file.write(line + "\n")
            except OSError as exc:
                print(f"shequ audit: cannot append to {args.append}: {exc}", file=sys.stderr)
                return 1
        print(line)
        return 0
    print(json.dumps(found, ensure_ascii=False, indent=2))
    return 1 if any(result["problems"] for result in found.values()) else 0


def _read_anchors(path: Path) -> dict[str, list[dict[str, Any]]]:
    """Every anchor in a file of ``shequ audit anchor`` lines, by service."""
    kept: dict[str, list[dict[str, Any]]] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            anchors = json.loads(line)
            for service, anchor in anchors.items():
                kept.setdefault(service, []).append(
                    {key: anchor[key] for key in ("seq", "count", "digest", "at")}
                )
        except (ValueError, AttributeError, KeyError, TypeError) as exc:
            raise ValueError(f"line {number} is not a `shequ audit anchor` line ({exc})") from exc
    return kept


def cmd_init(args: argparse.Namespace) -> int:
    """Declare every queue and create every index before the services start (install job)."""
    import pymongo.errors
    from kombu.exceptions import OperationalError

    from shequ.install import prepare

    amqp_uri = _server_uri(args, "amqp")
    mongo_uri = None if args.topology_only else _server_uri(args, "mongo")
    if amqp_uri is None or (mongo_uri is None and not args.topology_only):
        return 2
    try:
        result = prepare(
            amqp_uri,
            mongo_uri,
            database_prefix=os.environ.get("SHEQU_MONGO_DATABASE_PREFIX", ""),
            services=args.service,
        )
    except (OperationalError, OSError, pymongo.errors.PyMongoError, LookupError) as exc:
        print(f"shequ init: {exc}", file=sys.stderr)
        return 1
    done = f"{result.queues} handler queues declared for {', '.join(result.services)}"
    if result.databases:
        done += f"; indexes ensured in {', '.join(result.databases)}"
    print(f"shequ init: {done}")
    return 0


def cmd_apikey(args: argparse.Namespace) -> int:
    """Issue an Open311 client's key: printed once, stored only as a hash in the grid's database."""
    import pymongo
    from pymongo.errors import PyMongoError

    from shequ.store import database_name
    from shequ_services.grid.open311 import check_client_name
    from shequ_services.grid.store import ApiKeyRepository, ClientExists, issue_api_key

    try:
        name = check_client_name(args.name)
    except ValueError as exc:
        print(f"shequ apikey: {exc}", file=sys.stderr)
        return 2
    uri = _server_uri(args, "mongo")
    if uri is None:
        return 2
    client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(
        uri, serverSelectionTimeoutMS=5000, tz_aware=True
    )
    try:
        db = client[database_name("grid", os.environ.get("SHEQU_MONGO_DATABASE_PREFIX"))]
        key = issue_api_key(ApiKeyRepository(db), name)
    except ClientExists as exc:
        print(f"shequ apikey: {exc}", file=sys.stderr)
        return 1
    except PyMongoError as exc:
        # Not the URI itself: a production one carries the database password.
        print(f"shequ apikey: cannot reach the grid's database: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()
    print(key)
    print(f"the Open311 api_key of {name}; it is shown only this once", file=sys.stderr)
    return 0


def cmd_openapi(args: argparse.Namespace) -> int:
    """Build the document from the service class alone: no stack needs to run."""
    from shequ.discovery import load_service
    from shequ.openapi import build_spec

    try:
        service_cls = load_service(args.service)
    except LookupError as exc:
        print(f"shequ openapi: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(build_spec(service_cls), ensure_ascii=False, indent=2))
    return 0


def cmd_disclosure(args: argparse.Namespace) -> int:
    """Operate on the public log from outside: keys, a verified copy, a witness's cosignature."""
    from shequ_services.disclosure import checkpoint, client, verify

    try:
        if args.disclosure_action == "keygen":
            private = checkpoint.new_private_key()
            public = checkpoint.public_key_of(checkpoint.load_private_key(private))
            print(json.dumps({"private_key": private, "public_key": checkpoint.b64(public)}))
            print("keep private_key secret; publish public_key", file=sys.stderr)
            return 0
        if args.disclosure_action == "fetch":
            copy = client.download(args.url)
            args.output.write_text(json.dumps(copy, ensure_ascii=False), encoding="utf-8")
            size = copy["checkpoint"]["size"]
            print(f"saved the checkpoint of size {size} and {len(copy['entries'])} entries "
                  f"to {args.output}")  # fmt: skip
            return 0
        if args.disclosure_action == "verify":
            pinned = checkpoint.load_public_key(args.public_key) if args.public_key else None
            copy = json.loads(args.copy.read_text(encoding="utf-8"))
            report = verify.verify_copy(copy, pinned_key=pinned)
            for warning in report.warnings:
                print(f"warning: {warning}", file=sys.stderr)
            for problem in report.problems:
                print(f"FAILED: {problem}")
            if report.ok:
                cosigned = ", ".join(report.witnesses) or "no witness"
                print(f"verified: {report.checked_entries} entries make the signed tree of size "
                      f"{report.size}; cosigned by {cosigned}")  # fmt: skip
                return 0
            return 1
        if args.disclosure_action == "witness":
            stored = client.cosign(
                args.url,
                witness=args.name,
                key=args.key_file.read_text(encoding="utf-8").strip(),
                state_file=args.state,
                log_key=args.log_key,
            )
            count = len(stored["cosignatures"])
            print(f"cosigned the checkpoint of size {stored['size']} as {args.name} "
                  f"({count} witness signature{'s' if count != 1 else ''} on it)")  # fmt: skip
            return 0
    except (client.LogClientError, checkpoint.InvalidKey, OSError, ValueError) as exc:
        print(f"shequ disclosure {args.disclosure_action}: {exc}", file=sys.stderr)
        return 1
    return 2


def cmd_asyncapi(args: argparse.Namespace) -> int:
    """Print (or write) the AsyncAPI 3.0 document of every registered event."""
    from shequ.catalogue import asyncapi_yaml, catalogue_markdown

    _write_or_print(asyncapi_yaml() if args.command == "asyncapi" else catalogue_markdown(), args)
    return 0


def cmd_authorisation(args: argparse.Namespace) -> int:
    """Print (or write) the authorisation matrix of every service (docs/authorisation.md)."""
    from shequ.policy import authorisation_markdown

    _write_or_print(authorisation_markdown(), args)
    return 0


def _write_or_print(text: str, args: argparse.Namespace) -> None:
    """A generated document to ``--output`` (saying so on stderr), else to stdout."""
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text, encoding="utf-8")
        print(f"wrote {args.output}", file=sys.stderr)


def cmd_contracts(args: argparse.Namespace) -> int:
    """Compare the contracts with the released snapshot; on release, replace the snapshot."""
    from shequ.catalogue import snapshot
    from shequ.compat import RELEASED, breaking_changes, load_released

    path = args.released or RELEASED
    current = snapshot()
    released = load_released(path) if path.exists() else {"events": {}}
    problems = breaking_changes(released, current)
    for problem in problems:
        print(f"breaking: {problem}", file=sys.stderr)
    if args.contracts_action == "check":
        if problems:
            print("publish a breaking change as a new version beside the old one",
                  file=sys.stderr)  # fmt: skip
            return 1
        print(f"{len(current['events'])} event versions, none broken since the release")
        return 0
    if problems and not args.retire:
        print("not released: pass --retire only when these versions' deprecation ended",
              file=sys.stderr)  # fmt: skip
        return 1
    path.write_text(json.dumps(current, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"released {len(current['events'])} event versions to {path}")
    return 0


def cmd_bureau_key(args: argparse.Namespace) -> int:
    """Issue a bureau client's API key: printed once; the deployment keeps only its hash."""
    from shequ.apikeys import issue
    from shequ.policy import service_tables

    known = {
        scope
        for _, table, _ in service_tables()
        for action in table.actions.values()
        for scope in action.client_scopes
    }
    unknown = sorted(set(args.scope) - known)
    if unknown:
        print(f"shequ bureau key: no action needs the scope(s) {', '.join(unknown)}; "
              f"scopes: {', '.join(sorted(known))}", file=sys.stderr)  # fmt: skip
        return 2
    try:
        key, entry = issue(args.name, args.scope)
    except ValueError as exc:
        print(f"shequ bureau key: {exc}", file=sys.stderr)
        return 2
    print(key)
    print(json.dumps(entry, ensure_ascii=False))
    print(
        f"line 1 is the API key of {args.name}, shown only this once; give it to the client "
        "(Authorization: ApiKey <key>). Line 2 is the entry to add to SHEQU_API_KEYS.",
        file=sys.stderr,
    )
    return 0


def cmd_bureau(args: argparse.Namespace) -> int:
    """Provision or remove another bureau's read-only AMQP access."""
    from shequ.bureau import BureauError, add_bureau, management_from, remove_bureau

    if args.bureau_action == "key":
        return cmd_bureau_key(args)

    amqp_uri = _server_uri(args, "amqp")
    management_url = os.environ.get("SHEQU_RABBITMQ_MANAGEMENT_URL")
    if not management_url:
        path = args.data_dir / "endpoints.json"
        if path.exists():
            management_url = json.loads(path.read_text(encoding="utf-8")).get("rabbitmq_management")
    if amqp_uri is None:
        return 2
    if not management_url:
        print("shequ bureau: no management API known; set SHEQU_RABBITMQ_MANAGEMENT_URL",
              file=sys.stderr)  # fmt: skip
        return 2
    management, vhost = management_from(management_url, amqp_uri)
    try:
        if args.bureau_action == "add":
            result = add_bureau(
                management, vhost, amqp_uri, args.name, args.events, args.public_address
            )
        else:
            result = remove_bureau(management, vhost, args.name)
    except BureauError as exc:
        print(f"shequ bureau {args.bureau_action}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, ensure_ascii=False, indent=2))
    if args.bureau_action == "add":
        print("the password in amqp_uri is shown only this once", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shequ", description="Shequ community platform")
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="run the embedded stack and every service (foreground)")
    _add_data_dir(up)
    up.add_argument("--port", type=int, default=8080, help="front door port (default 8080)")

    demo = sub.add_parser("demo", help="`up` plus a scripted community morning and a summary")
    _add_data_dir(demo)
    demo.add_argument("--port", type=int, default=8080, help="front door port (default 8080)")
    demo.add_argument("--exit", action="store_true", help="stop after the summary")

    token = sub.add_parser("token", help="mint a development bearer token")
    _add_data_dir(token)
    token.add_argument("--role", action="append", required=True, choices=sorted(ROLES))
    token.add_argument("--sub", default="dev-user", help="the subject (user id)")
    token.add_argument("--community", action="append", help="a community in scope (repeatable)")
    token.add_argument("--department", help="the department id, for department users")
    token.add_argument(
        "--purpose",
        choices=sorted(PURPOSES),
        help="a declared purpose (unlocks sensitive records for the roles that allow it)",
    )
    token.add_argument(
        "--scope",
        action="append",
        help="an OAuth scope, for a bureau client's token (repeatable), e.g. notify.subscriptions",
    )

    dead = sub.add_parser(
        "dlq", aliases=["deadletters"], help="list or replay a service's dead letters"
    )
    _add_data_dir(dead)
    dead.add_argument("action", choices=["list", "replay"])
    dead.add_argument("service")
    dead.add_argument("--id", help="replay only the message with this id")

    init = sub.add_parser(
        "init", help="declare every queue and create every index (install and upgrade job)"
    )
    _add_data_dir(init)
    init.add_argument(
        "--service", action="append", help="only this service (repeatable; default: all)"
    )
    init.add_argument(
        "--topology-only", action="store_true", help="declare the queues; leave the database"
    )

    apikey = sub.add_parser("apikey", help="manage Open311 clients' API keys")
    apikey_sub = apikey.add_subparsers(dest="apikey_action", required=True)
    add = apikey_sub.add_parser("add", help="issue an API key for a new Open311 client")
    _add_data_dir(add)
    add.add_argument("name", help="the client's name, e.g. wechat-miniapp")
    openapi = sub.add_parser("openapi", help="print a service's OpenAPI 3 document (JSON)")
    openapi.add_argument("service", help="a service name, e.g. grid")

    for name, what in (
        ("asyncapi", "print the AsyncAPI 3.0 document of every event (YAML)"),
        ("catalogue", "print the readable event catalogue (Markdown)"),
        ("authorisation", "print every service's authorisation matrix (Markdown)"),
    ):
        generated = sub.add_parser(name, help=what)
        generated.add_argument("-o", "--output", type=Path, help="write to this file instead")

    contracts = sub.add_parser("contracts", help="check event schemas against the last release")
    contracts_sub = contracts.add_subparsers(dest="contracts_action", required=True)
    contracts_check = contracts_sub.add_parser(
        "check", help="exit 1 on a breaking change to a released event version"
    )
    contracts_release = contracts_sub.add_parser(
        "release", help="record the current schemas as released (on a release)"
    )
    contracts_release.add_argument(
        "--retire",
        action="store_true",
        help="accept removed versions whose deprecation period has ended",
    )
    for each in (contracts_check, contracts_release):
        each.add_argument("--released", type=Path, help="the snapshot (default: the package's)")

    bureau = sub.add_parser(
        "bureau", help="give another bureau read-only AMQP access, or an API key"
    )
    bureau_sub = bureau.add_subparsers(dest="bureau_action", required=True)
    bureau_add = bureau_sub.add_parser("add", help="provision a user, a queue and its bindings")
    _add_data_dir(bureau_add)
    bureau_add.add_argument("name", help="the bureau's name, e.g. civil-affairs")
    bureau_add.add_argument(
        "--events",
        nargs="+",
        required=True,
        metavar="PATTERN",
        help="event types it may receive: <service>.<entity>.<verb>, * for a word",
    )
    bureau_add.add_argument(
        "--public-address",
        metavar="URI",
        help="where bureaus reach the broker, e.g. amqps://mq.district.example:5671 "
        "(default: the admin URI's host)",
    )
    bureau_remove = bureau_sub.add_parser("remove", help="delete its user and its queues")
    _add_data_dir(bureau_remove)
    bureau_remove.add_argument("name")
    bureau_key = bureau_sub.add_parser(
        "key", help="issue an API key for a bureau's machine client (an SHEQU_API_KEYS entry)"
    )
    bureau_key.add_argument("name", help="the client's name, e.g. civil-affairs")
    bureau_key.add_argument(
        "--scope",
        action="append",
        required=True,
        metavar="SCOPE",
        help="a client scope the key grants (repeat for more), e.g. notify.subscriptions",
    )

    reconciling = sub.add_parser(
        "reconcile", help="check every report reached every consumer exactly once"
    )
    _add_data_dir(reconciling)
    reconciling.add_argument(
        "--wait", type=float, default=0, help="retry for up to this many seconds until clean"
    )

    auditing = sub.add_parser("audit", help="check the services' audit trails")
    auditing_sub = auditing.add_subparsers(dest="audit_action", required=True)
    audit_verify = auditing_sub.add_parser(
        "verify", help="report every edited or unlinked record; exit 1 if there is one"
    )
    _add_data_dir(audit_verify)
    audit_verify.add_argument("service", nargs="*", help="the services to check (default: all)")
    audit_verify.add_argument(
        "--anchors",
        type=Path,
        help="a file of `shequ audit anchor` lines: also report records deleted, added or "
        "changed below each",
    )
    audit_anchor = auditing_sub.add_parser(
        "anchor",
        help="print, as one JSON line, a digest of each trail up to its settled records, "
        "to keep outside the database",
    )
    _add_data_dir(audit_anchor)
    audit_anchor.add_argument("service", nargs="*", help="the services to anchor (default: all)")
    audit_anchor.add_argument(
        "--append", type=Path, help="also append the line to this file (created if missing)"
    )

    disclosure = sub.add_parser("disclosure", help="check and witness the public disclosure log")
    disclosure_sub = disclosure.add_subparsers(dest="disclosure_action", required=True)
    disclosure_sub.add_parser("keygen", help="print a new Ed25519 key pair (base64) as JSON")
    fetch = disclosure_sub.add_parser("fetch", help="download the log up to its latest checkpoint")
    fetch.add_argument("url", help="the platform's base URL, e.g. http://127.0.0.1:8080")
    fetch.add_argument("-o", "--output", type=Path, required=True, help="file to save the copy")
    check = disclosure_sub.add_parser(
        "verify", help="check a downloaded copy against its signed checkpoint, offline"
    )
    check.add_argument("copy", type=Path, help="a file saved by `shequ disclosure fetch`")
    check.add_argument("--public-key", help="the district's published key (base64) to pin")
    witness = disclosure_sub.add_parser(
        "witness", help="check the latest checkpoint's consistency and add a cosignature"
    )
    witness.add_argument("url", help="the platform's base URL")
    witness.add_argument("--name", required=True, help="this witness's configured name")
    witness.add_argument(
        "--key-file", type=Path, required=True, help="file with the witness's private key"
    )
    witness.add_argument(
        "--state", type=Path, required=True, help="file remembering the last cosigned checkpoint"
    )
    witness.add_argument("--log-key", help="the log's public key (base64) to pin")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # front door access lines
    if args.command == "up":
        return cmd_up(args)
    if args.command == "demo":
        return cmd_up(args, demo=True)
    if args.command == "token":
        return cmd_token(args)
    if args.command in ("dlq", "deadletters"):
        return cmd_deadletters(args)
    if args.command == "reconcile":
        return cmd_reconcile(args)
    if args.command == "audit":
        return cmd_audit(args)
    if args.command == "init":
        return cmd_init(args)
    if args.command == "apikey":
        return cmd_apikey(args)
    if args.command == "openapi":
        return cmd_openapi(args)
    if args.command == "disclosure":
        return cmd_disclosure(args)
    if args.command in ("asyncapi", "catalogue"):
        return cmd_asyncapi(args)
    if args.command == "authorisation":
        return cmd_authorisation(args)
    if args.command == "contracts":
        return cmd_contracts(args)
    if args.command == "bureau":
        return cmd_bureau(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
