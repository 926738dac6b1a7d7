"""The `autoprov` command (see CONTRACT.md for what each subcommand promises)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psycopg

from autoprov import (
    config,
    config_fetch,
    db,
    devices,
    front,
    kamailio,
    kemi_stubs,
    resync,
    stack,
    tls,
    tokens,
)
from autoprov.config import Settings
from autoprov.mac import InvalidMacError, normalize
from autoprov.pgcluster import ClusterError
from autoprov.redirect import jobs as redirect_jobs
from autoprov.redirect import state as redirect_state
from autoprov.redirect import worker as redirect_worker
from provisioning_wsgi import preview, vendors
from provisioning_wsgi import server as provisioning
from provisioning_wsgi.admin import links as admin_links

DB_RETRY_S = 2.0


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


def cmd_db_url(settings: Settings, args: argparse.Namespace) -> int:
    print(db.url(settings))
    return 0


def cmd_db_migrate(settings: Settings, args: argparse.Namespace) -> int:
    # At boot the database may answer later than we start; systemd starts the services once
    # this returns (systemd 252 fails their start at once if this exits with an error instead).
    while args.wait_for_database:
        try:
            with db.connect(settings):
                break
        except psycopg.OperationalError as exc:
            print(f"autoprov: waiting for the database: {str(exc).strip()}", file=sys.stderr,
                  flush=True)
            time.sleep(DB_RETRY_S)
    applied = db.migrate(settings)
    print("\n".join(f"applied {name}" for name in applied) or "database is up to date")
    return 0


def cmd_device_add(settings: Settings, args: argparse.Namespace) -> int:
    lines = [devices.LineSpec.parse(spec) for spec in args.line]
    with db.connect(settings) as conn:
        devices.add(conn, args.mac, args.vendor, args.model, lines, serial=args.serial)
    print(f"device {normalize(args.mac)} added")
    return 0


def cmd_device_show(settings: Settings, args: argparse.Namespace) -> int:
    with db.connect(settings) as conn:
        info = devices.show(conn, args.mac)
    if args.json:
        _print_json(info)
        return 0
    serial = f"  serial {info['serial_number']}" if info["serial_number"] else ""
    print(f"device {info['mac']}  vendor {info['vendor']}  model {info['model']}{serial}")
    for line in info["lines"]:
        state = f"registered ({line['contacts']} contact(s))" if line["registered"] else \
            "not registered"
        print(f"  line {line['line']}: {line['aor']}  {state}")
    if not info["lines"]:
        print("  no lines")
    print(f"  redirect: {redirect_state.describe(info['redirect'])}")
    print(f"  last config fetch: {config_fetch.describe(info['last_config_fetch'])}")
    last = info["resync"]
    if last:
        print(f"  last resync: request {last['request_id']} ({last['reason']}) {last['state']}")
        for contact in last["contacts"]:
            print("    " + resync.describe(contact))
    return 0


def cmd_device_list(settings: Settings, args: argparse.Namespace) -> int:
    with db.connect(settings) as conn:
        rows = devices.listing(conn)
    if args.json:
        _print_json(rows)
    else:
        for row in rows:
            print(f"{row['mac']}  {row['vendor']:<9}  {row['model']:<12}  {row['lines']} line(s)")
    return 0


def cmd_device_unknown(settings: Settings, args: argparse.Namespace) -> int:
    with db.connect(settings) as conn:
        rows = devices.unknown(conn)
    if args.json:
        _print_json(rows)
        return 0
    for row in rows:
        seen = f"{row['first_seen']:%Y-%m-%d %H:%M} .. {row['last_seen']:%Y-%m-%d %H:%M}"
        print(f"{row['mac']}  {row['vendor']:<11}  {row['model'] or '-':<12}  "
              f"{row['firmware'] or '-':<14}  {row['address'] or '-':<15}  {seen}  "
              f"{row['fetch_count']} fetch(es)")
    return 0


def cmd_device_remove(settings: Settings, args: argparse.Namespace) -> int:
    with db.connect(settings) as conn:
        devices.remove(conn, args.mac)
    print(f"device {normalize(args.mac)} removed")
    return 0


def cmd_resync(settings: Settings, args: argparse.Namespace) -> int:
    with db.connect(settings) as conn:
        request_id = resync.request(conn, args.mac)
        info = resync.wait(conn, request_id, args.wait) if args.wait else \
            resync.status(conn, request_id)
        # A phone never provisioned has no line registered: SIP cannot reach it (Cisco SPA).
        bootstrap_page = admin_links.bootstrap_hint(settings, conn, info["mac"])
    if bootstrap_page:
        info["bootstrap_page"] = bootstrap_page
    if args.json:
        _print_json(info)
    else:
        print(f"resync request {request_id} for {info['mac']}: {info['state']}")
        for contact in info["contacts"]:
            print("  " + resync.describe(contact))
        if info["state"] == "pending" and info["checked"]:
            print("  no registered contact: the NOTIFY goes out right after the next REGISTER")
        if info["state"] == "fetched":
            print("  the phone fetched its config since the change: nothing to send")
        if bootstrap_page:
            off = "" if settings.admin_password else \
                " (the operators' pages are off: set admin_password)"
            print("  no line of this device is registered; if the phone was never provisioned,"
                  f" send it its provisioning URL from a browser on its network: "
                  f"{bootstrap_page}{off}")
    if not args.wait:
        return 0
    return 0 if resync.succeeded(info) else 1


def cmd_redirect_worker(settings: Settings, args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    redirect_worker.run_worker(settings, stop)
    return 0


def cmd_redirect_retry(settings: Settings, args: argparse.Namespace) -> int:
    with db.connect(settings) as conn:
        job_id = redirect_jobs.retry(conn, args.mac)
    print(f"redirect job {job_id} for {normalize(args.mac)} queued again")
    return 0


def cmd_token_create(settings: Settings, args: argparse.Namespace) -> int:
    with db.connect(settings) as conn:
        token = tokens.create(conn, args.name, args.read_only)
    kind = "read-only " if args.read_only else ""
    print(f"{kind}API token {args.name} created; it is shown only now:", file=sys.stderr)
    print(token)
    return 0


def cmd_token_list(settings: Settings, args: argparse.Namespace) -> int:
    with db.connect(settings) as conn:
        rows = tokens.listing(conn)
    if args.json:
        _print_json(rows)
        return 0
    for row in rows:
        access = "read-only" if row["read_only"] else "read-write"
        state = "  REVOKED" if row["revoked"] else ""
        used = row["last_used_at"].isoformat(timespec="seconds") if row["last_used_at"] \
            else "never"
        print(f"{row['name']:<24} {access:<10}  created "
              f"{row['created_at'].isoformat(timespec='seconds')}  last used {used}{state}")
    return 0


def cmd_token_revoke(settings: Settings, args: argparse.Namespace) -> int:
    with db.connect(settings) as conn:
        tokens.revoke(conn, args.name)
    print(f"API token {args.name} revoked")
    return 0


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    return provisioning.serve(settings)


def cmd_front_run(settings: Settings, args: argparse.Namespace) -> int:
    front.write(settings)
    argv = front.command(settings)
    os.execv(argv[0], argv)  # noqa: S606 (our own argv): nginx is now systemd's main process


def cmd_front_config(settings: Settings, args: argparse.Namespace) -> int:
    print(front.config(settings), end="")
    return 0


def cmd_render(settings: Settings, args: argparse.Namespace) -> int:
    rendered = preview.render(settings, args.mac, bootstrap=args.bootstrap, file=args.file)
    sys.stdout.buffer.write(rendered.body)
    return 0


def cmd_tls_phone_cert(settings: Settings, args: argparse.Namespace) -> int:
    cert, key = tls.write_phone_cert(settings, args.mac, args.vendor, Path(args.out))
    print(cert)
    print(key)
    return 0


def cmd_tls_ca(settings: Settings, args: argparse.Namespace) -> int:
    tls.dev_ca(settings)
    print(tls.dev_ca_path(settings))
    return 0


def cmd_tls_dev_material(settings: Settings, args: argparse.Namespace) -> int:
    tls.ensure_dev_material(settings)
    return 0


def cmd_kamailio_reload(settings: Settings, args: argparse.Namespace) -> int:
    kamailio.reload_kemi(settings)
    print("KEMI code reloads in every worker on its next message")
    return 0


def cmd_kamailio_stubs(settings: Settings, args: argparse.Namespace) -> int:
    api = kamailio.rpc(settings, "app_python.api_list")
    for path in kemi_stubs.write(api, Path(args.out)):
        print(path)
    return 0


def cmd_kamailio_command(settings: Settings, args: argparse.Namespace) -> int:
    print(" ".join(kamailio.command(settings)))
    return 0


def cmd_kamailio_run(settings: Settings, args: argparse.Namespace) -> int:
    kamailio.run(settings)


def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    return stack.run(settings)


def cmd_up(settings: Settings, args: argparse.Namespace) -> int:
    stack.up(settings)
    return 0


def cmd_down(settings: Settings, args: argparse.Namespace) -> int:
    stack.down(settings)
    return 0


def cmd_purge(settings: Settings, args: argparse.Namespace) -> int:
    stack.purge(settings)
    return 0


Handler = Callable[[Settings, argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autoprov", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def command(parent: Any, name: str, handler: Handler, help_: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = parent.add_parser(name, help=help_)
        p.set_defaults(handler=handler)
        return p

    command(sub, "run", cmd_run, "run the whole stack in the foreground")
    command(sub, "up", cmd_up, "start the stack in the background")
    p = command(sub, "down", cmd_down, "stop what `up` started and this checkout's database")
    p.description = ("Stop the services `up` started and, when db_url is empty, this checkout's "
                     "private PostgreSQL cluster (whoever started it). An external database is "
                     "never touched.")
    p = command(sub, "purge", cmd_purge, "stop everything, then delete this checkout's data")
    p.description = ("Do what `down` does, then delete this checkout's private PostgreSQL "
                     "cluster wherever it lives (as root: /var/lib/postgresql/autoprov/NAME-HASH, "
                     "the target of var_dir/pg) and var_dir with its TLS material, logs and pid "
                     "files. An external database (db_url) is never touched; with db_url set, "
                     "a running private cluster is refused rather than removed.")

    db_parser = sub.add_parser("db", help="database").add_subparsers(dest="db", required=True)
    command(db_parser, "url", cmd_db_url, "print the database URL in use")
    p = command(db_parser, "migrate", cmd_db_migrate, "apply sql/ migrations (safe to repeat)")
    p.add_argument("--wait-for-database", action="store_true",
                   help=f"retry every {DB_RETRY_S:.0f}s until the database answers")

    dev = sub.add_parser("device", help="devices").add_subparsers(dest="device", required=True)
    p = command(dev, "add", cmd_device_add, "create a device")
    p.add_argument("mac")
    p.add_argument("--vendor", required=True, choices=sorted(vendors.VENDORS))
    p.add_argument("--model", required=True)
    p.add_argument("--line", action="append", default=[], metavar="N=USER@DOMAIN")
    p.add_argument("--serial", metavar="SN", help="the serial number on the phone's label "
                   "(Grandstream's redirect service, GDMS, needs it)")
    p = command(dev, "show", cmd_device_show, "show a device, its lines and their state")
    p.add_argument("mac")
    p.add_argument("--json", action="store_true")
    p = command(dev, "list", cmd_device_list, "list devices")
    p.add_argument("--json", action="store_true")
    p = command(dev, "unknown", cmd_device_unknown,
                "phones that asked for a config nobody created (never created automatically)")
    p.add_argument("--json", action="store_true")
    p = command(dev, "remove", cmd_device_remove, "delete a device")
    p.add_argument("mac")

    p = command(sub, "resync", cmd_resync, "make the device re-fetch its config (SIP NOTIFY)")
    p.add_argument("mac")
    p.add_argument("--wait", type=float, default=0, metavar="SECONDS",
                   help="wait for every NOTIFY's outcome; exit 0 only if all were accepted "
                   "or the phone fetched a config with the change meanwhile")
    p.add_argument("--json", action="store_true")

    red = sub.add_parser("redirect", help="zero-touch redirect services "
                         "(Yealink, Panasonic, Snom, Grandstream)")\
        .add_subparsers(dest="redirect", required=True)
    command(red, "worker", cmd_redirect_worker, "run the redirect registration jobs until stopped")
    p = command(red, "retry", cmd_redirect_retry, "queue a MAC's failed redirect job again")
    p.add_argument("mac")

    tok = sub.add_parser("token", help="REST API tokens (Authorization: Bearer)")\
        .add_subparsers(dest="token", required=True)
    p = command(tok, "create", cmd_token_create, "create a token; it is printed as the last line"
                " (only its hash is stored)")
    p.add_argument("name", help="logged with every write the token makes")
    p.add_argument("--read-only", action="store_true", help="GET only: writes are refused (403)")
    p = command(tok, "list", cmd_token_list, "the tokens: name, access, created, last used")
    p.add_argument("--json", action="store_true")
    p = command(tok, "revoke", cmd_token_revoke, "revoke a token for good")
    p.add_argument("name")

    command(sub, "serve", cmd_serve,
            "run the provisioning service (the phones' two ports and the operators' one) on "
            "unix sockets behind the web front (`autoprov front run`)")
    front_parser = sub.add_parser("front", help="the web front (nginx) on the web ports")\
        .add_subparsers(dest="front", required=True)
    command(front_parser, "run", cmd_front_run,
            "write the front's nginx configuration and run nginx in the foreground")
    command(front_parser, "config", cmd_front_config,
            "print the nginx configuration the settings make")
    p = command(sub, "render", cmd_render, "print the config the phone would get")
    p.add_argument("mac")
    p.add_argument("--bootstrap", action="store_true",
                   help="the generic file from the plain-HTTP port instead of the full one")
    p.add_argument("--file", metavar="NAME", help="a file name the phone asks for "
                   "(default: the device's own file)")

    tls_parser = sub.add_parser("tls", help="TLS material").add_subparsers(dest="tls",
                                                                          required=True)
    p = command(tls_parser, "phone-cert", cmd_tls_phone_cert,
                "write a phone client certificate signed by the development CA")
    p.add_argument("mac")
    p.add_argument("--vendor", required=True, choices=sorted(vendors.VENDORS))
    p.add_argument("--out", required=True, metavar="DIR")
    command(tls_parser, "ca", cmd_tls_ca, "print the path of the development CA certificate")
    command(tls_parser, "dev-material", cmd_tls_dev_material,
            "create the development CA and server certificates that empty tls_* settings use")

    kam = sub.add_parser("kamailio", help="the SIP proxy").add_subparsers(dest="kam",
                                                                          required=True)
    command(kam, "reload", cmd_kamailio_reload, "reload the KEMI Python code without a restart")
    p = command(kam, "stubs", cmd_kamailio_stubs, "write typed KSR stubs from the running proxy")
    p.add_argument("--out", default="typings")
    command(kam, "command", cmd_kamailio_command, "print the Kamailio command line")
    command(kam, "run", cmd_kamailio_run,
            "exec Kamailio in the foreground with that command line (systemd's ExecStart)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = config.load()
        handler: Handler = args.handler
        return handler(settings, args)
    except (InvalidMacError, devices.DeviceError, resync.NoSuchDeviceError, config.ConfigError,
            ClusterError, stack.StackError, kamailio.RpcError, db.MigrationError,
            redirect_jobs.RedirectError, tls.TlsError, preview.PreviewError,
            provisioning.ServeError, front.FrontError, tokens.TokenError) as exc:
        print(f"autoprov: {exc}", file=sys.stderr)
        return 2
    except psycopg.OperationalError as exc:
        print(f"autoprov: database unavailable: {str(exc).strip()}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
