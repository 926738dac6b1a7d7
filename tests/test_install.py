"""`make install DESTDIR=DIR`: autoprov as systemd services, checked in DIR and run from it.

systemd is not PID 1 here, so nothing is started through it: the tests check the files it would
read (with `systemd-analyze verify`), then run the commands its units start, from the installed
venv, as an unprivileged user, against a database and role made the way docs/install.md says.
"""

from __future__ import annotations

import configparser
import contextlib
import dataclasses
import grp
import os
import pwd
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
import requests

from autoprov import config, front, sipprobe
from autoprov.config import ROOT, Settings
from autoprov.pgcluster import Cluster
from provisioning_wsgi import vendors
from tests.conftest import make_settings, world_readable_tmpdir
from tests.ports import free_port
from tests.sipp import Phone

VENV = "/usr/lib/autoprov/venv"
FRONT = "autoprov-front.service"
UNITS = ("autoprov-migrate.service", "autoprov-kamailio.service",
         "autoprov-provisioning.service", FRONT)
# Stands in for the user autoprov (only a real install creates it): unprivileged, able to write
# var_dir and nothing else that ProtectSystem=strict would leave writable.
SERVICE_USER = ("nobody", "nogroup")
START_TIMEOUT = 30.0


@dataclasses.dataclass(frozen=True)
class Installed:
    dest: Path  # DESTDIR
    work: Path  # beside it: logs, var_dir

    def path(self, final: str) -> Path:
        """Where a file installed for `final` (an absolute path) is in DESTDIR."""
        return self.dest / final.lstrip("/")

    @property
    def python(self) -> Path:
        return self.path(f"{VENV}/bin/python")

    @property
    def site_packages(self) -> Path:
        (found,) = self.path(f"{VENV}/lib").glob("python3*/site-packages")
        return found


def make_install(dest: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["make", "-C", str(ROOT), "install", f"DESTDIR={dest}"],
                          capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture(scope="module")
def installed() -> Iterator[Installed]:
    # World-readable: the installed code runs as SERVICE_USER.
    work = world_readable_tmpdir("autoprov-install-")
    result = make_install(work / "dest")
    assert result.returncode == 0, result.stdout + result.stderr
    yield Installed(work / "dest", work)
    shutil.rmtree(work, ignore_errors=True)


def installed_env(settings: Settings) -> dict[str, str]:
    """The environment a unit gives the service: settings as AUTOPROV_*, nothing of the
    checkout (no PYTHONPATH, no other AUTOPROV_ variable, no configuration file)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AUTOPROV_", "PYTHON")) and k != "VIRTUAL_ENV"}
    env.update(settings.as_env())
    env["AUTOPROV_CONFIG"] = "/nonexistent/autoprov.toml"
    return env


def as_service_user(argv: list[str]) -> list[str]:
    user, group = SERVICE_USER
    return ["setpriv", f"--reuid={user}", f"--regid={group}", "--clear-groups",
            "--no-new-privs", *argv]


def autoprov(inst: Installed, settings: Settings, *args: str, service_user: bool = False,
             timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The installed `autoprov` command. Its script's shebang names the final path, which does
    not exist here, so the venv's python runs the CLI module; cwd is DESTDIR, not the checkout."""
    argv = [str(inst.python), "-m", "autoprov.cli", *args]
    return subprocess.run(as_service_user(argv) if service_user else argv,
                          cwd=inst.dest, env=installed_env(settings), capture_output=True,
                          text=True, timeout=timeout, check=False)


# --- the installed files ---------------------------------------------------------------------


def test_layout_venv_units_user_and_configuration(installed: Installed) -> None:
    unit_dir = installed.dest / "lib/systemd/system"
    assert sorted(p.name for p in unit_dir.iterdir()) == sorted(UNITS)
    assert "u autoprov " in (installed.dest / "usr/lib/sysusers.d/autoprov.conf").read_text()
    tmpfiles = (installed.dest / "usr/lib/tmpfiles.d/autoprov.conf").read_text()
    assert "z /etc/autoprov/autoprov.toml 0640 root autoprov" in tmpfiles
    toml = installed.dest / "etc/autoprov/autoprov.toml"
    assert toml.stat().st_mode & 0o777 == 0o640
    assert (installed.dest / "usr/share/doc/autoprov/install.md").is_file()

    link = installed.dest / "usr/bin/autoprov"
    assert os.readlink(link) == f"{VENV}/bin/autoprov"
    script = installed.path(f"{VENV}/bin/autoprov")
    assert os.access(script, os.X_OK)
    assert script.read_text().splitlines()[0] == f"#!{VENV}/bin/python"
    # Built from Debian's interpreter, the one Kamailio embeds.
    assert os.readlink(installed.python) in ("/usr/bin/python3", "python3")
    assert "home = /usr/bin" in installed.path(f"{VENV}/pyvenv.cfg").read_text()

    site = installed.site_packages
    for package in ("autoprov", "kemi", "provisioning_wsgi", "psycopg", "cheroot", "jinja2"):
        assert (site / package / "__init__.py").is_file(), package
    assert (site / "kemi/handler.py").is_file()
    templates = site / "provisioning_wsgi/templates"
    assert sorted(p.name for p in templates.iterdir() if p.is_dir()) == sorted(vendors.VENDORS)
    shipped = sorted(p.relative_to(ROOT / "provisioning_wsgi") for p in
                     (ROOT / "provisioning_wsgi").rglob("*") if p.is_file()
                     and "__pycache__" not in p.parts and p.suffix != ".py")
    got = sorted(p.relative_to(site / "provisioning_wsgi") for p in
                 (site / "provisioning_wsgi").rglob("*") if p.is_file()
                 and "__pycache__" not in p.parts and p.suffix != ".py")
    assert got == shipped

    share = installed.path(f"{VENV}/share/autoprov")
    assert sorted(p.name for p in (share / "sql").iterdir()) == \
        sorted(p.name for p in (ROOT / "sql").glob("*.sql"))
    assert (share / "kamailio.cfg").read_text() == (ROOT / "kamailio.cfg").read_text()
    # Bytecode is there, so the service (which cannot write site-packages) compiles nothing.
    assert list((site / "autoprov/__pycache__").glob("cli.cpython-3*.pyc"))


def test_no_installed_file_names_destdir_or_the_checkout(installed: Installed) -> None:
    dest, checkout = str(installed.dest).encode(), str(ROOT).encode()
    named = []
    for directory, _dirs, files in os.walk(installed.dest):
        for name in files:
            path = Path(directory, name)
            data = os.readlink(path).encode() if path.is_symlink() else path.read_bytes()
            if dest in data or checkout in data:
                named.append(str(path.relative_to(installed.dest)))
    assert named == []


@pytest.fixture(scope="module")
def system_root(installed: Installed) -> Path:
    """DESTDIR as a system: a hard-linked copy (the venv is big) with this machine's units,
    which `systemd-analyze verify` loads (sysinit.target, postgresql.service, ...)."""
    root = installed.work / "system-root"
    subprocess.run(["cp", "-al", str(installed.dest), str(root)], check=True)
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True,
                    dirs_exist_ok=True)
    # A file of its own, not DESTDIR's: systemd-tmpfiles changes its owner.
    toml = root / "etc/autoprov/autoprov.toml"
    toml.unlink()
    shutil.copy2(installed.dest / "etc/autoprov/autoprov.toml", toml)
    return root


def test_units_pass_systemd_analyze_verify(system_root: Path) -> None:
    result = subprocess.run(["systemd-analyze", "verify", f"--root={system_root}", *UNITS],
                            capture_output=True, text=True, timeout=60, check=False)
    # Warnings (an unknown key, a value it cannot parse, an ExecStart= binary missing under
    # the root) are printed with exit status 0: no output at all is the pass.
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_sysusers_and_tmpfiles_make_the_user_who_reads_the_configuration(
    system_root: Path,
) -> None:
    # What `make install` runs on the real system (and a package's post-install script).
    for tool in ("systemd-sysusers", "systemd-tmpfiles --create"):
        result = subprocess.run([*tool.split(), f"--root={system_root}", "autoprov.conf"],
                                capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0, result.stderr

    [user] = [line.split(":") for line in (system_root / "etc/passwd").read_text().splitlines()
              if line.startswith("autoprov:")]
    assert 0 < int(user[2]) < 1000  # a system user
    assert (user[5], user[6]) == ("/var/lib/autoprov", "/usr/sbin/nologin")
    [group] = [line.split(":") for line in (system_root / "etc/group").read_text().splitlines()
               if line.startswith("autoprov:")]
    toml = (system_root / "etc/autoprov/autoprov.toml").stat()
    assert (toml.st_uid, toml.st_gid, toml.st_mode & 0o777) == (0, int(group[2]), 0o640)


def unit(installed: Installed, name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((installed.dest / "lib/systemd/system" / name).read_text())
    return parser


def unit_command(installed: Installed, name: str, key: str = "ExecStart") -> list[str]:
    """The arguments a unit gives /usr/bin/autoprov, so the tests run exactly those."""
    _binary, *args = shlex.split(unit(installed, name)["Service"][key])
    return args


def test_units_run_unprivileged_after_the_database_and_migrations(installed: Installed) -> None:
    for name in UNITS:
        parsed = unit(installed, name)
        service = parsed["Service"]
        assert (service["User"], service["Group"]) == ("autoprov", "autoprov")
        assert service["Environment"] == "AUTOPROV_CONFIG=/etc/autoprov/autoprov.toml"
        assert all(shlex.split(service[key])[0] == "/usr/bin/autoprov"
                   for key in ("ExecStartPre", "ExecStart", "ExecReload") if key in service)
        assert service["NoNewPrivileges"] == "yes"
        assert service["ProtectSystem"] == "strict"
        assert service["ProtectHome"] == "yes" and service["PrivateTmp"] == "yes"
        assert "network-online.target" in parsed["Unit"]["Wants"].split()
        if name == FRONT:  # needs no database: it starts after the service behind it
            assert "autoprov-provisioning.service" in parsed["Unit"]["After"].split()
            assert "autoprov-provisioning.service" in parsed["Unit"]["Wants"].split()
            assert parsed["Install"]["WantedBy"] == "multi-user.target"
            continue
        assert "postgresql.service" in parsed["Unit"]["After"].split()
    for name in ("autoprov-kamailio.service", "autoprov-provisioning.service"):
        parsed = unit(installed, name)
        assert parsed["Unit"]["Requires"] == "autoprov-migrate.service"
        assert "autoprov-migrate.service" in parsed["Unit"]["After"].split()
        assert parsed["Service"]["StateDirectory"] == "autoprov"
        assert parsed["Service"]["Restart"] == "on-failure"
        assert parsed["Install"]["WantedBy"] == "multi-user.target"
    migrate = unit(installed, "autoprov-migrate.service")["Service"]
    assert (migrate["Type"], migrate["RemainAfterExit"]) == ("oneshot", "yes")


def readme_configuration_keys() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    keys = []
    for row in section.splitlines():
        if row.startswith("| `"):
            keys += re.findall(r"`([a-z0-9_]+)`", row.split("|")[1])
    return keys


def test_shipped_configuration_lists_every_key_with_its_true_default(
    installed: Installed, tmp_path: Path,
) -> None:
    toml = installed.dest / "etc/autoprov/autoprov.toml"
    text = toml.read_text()
    settings = config.load({"AUTOPROV_CONFIG": str(toml)})
    assert settings.var_dir == Path("/var/lib/autoprov")
    assert settings.db_url.startswith("postgresql://")

    listed = re.findall(r"^(?:# )?([a-z0-9_]+) = ", text, flags=re.M)
    assert sorted(readme_configuration_keys()) == sorted(listed)
    # Uncommented, every commented-out line is the default it claims to be.
    uncommented = tmp_path / "autoprov.toml"
    uncommented.write_text(re.sub(r"^# ([a-z0-9_]+ = )", r"\1", text, flags=re.M))
    everything = config.load({"AUTOPROV_CONFIG": str(uncommented)})
    assert everything == settings


def test_reinstall_keeps_the_operators_configuration_and_replaces_the_venv(
    installed: Installed,
) -> None:
    toml = installed.dest / "etc/autoprov/autoprov.toml"
    edited = toml.read_text() + '\npublic_host = "prov.example.com"\n'
    toml.write_text(edited)
    marker = installed.site_packages / "left-by-the-old-install"
    marker.touch()

    result = make_install(installed.dest)

    assert result.returncode == 0, result.stdout + result.stderr
    assert toml.read_text() == edited
    dist = toml.with_name("autoprov.toml.dist")
    assert dist.read_text() == (ROOT / "contrib/etc/autoprov.toml").read_text()
    assert f"kept {toml}" in result.stdout
    assert not marker.exists()
    assert not installed.path(f"{VENV}.new").exists()
    assert not installed.path(f"{VENV}.old").exists()


# --- the installed code, run -----------------------------------------------------------------


@pytest.fixture(scope="module")
def service_db(pg_cluster: Cluster) -> Iterator[str]:
    """A database and role as docs/install.md makes them: a login role owning its database."""
    name = "autoprov_install_" + secrets.token_hex(4)
    password = secrets.token_hex(12)
    admin = pg_cluster.url()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {name} LOGIN PASSWORD '{password}'")
        conn.execute(f"CREATE DATABASE {name} OWNER {name}")
    yield f"postgresql://{name}:{password}@127.0.0.1:{pg_cluster.port}/{name}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"DROP ROLE IF EXISTS {name}")


def service_ids() -> tuple[int, int]:
    return pwd.getpwnam(SERVICE_USER[0]).pw_uid, grp.getgrnam(SERVICE_USER[1]).gr_gid


@pytest.fixture(scope="module")
def service_settings(installed: Installed, service_db: str) -> Settings:
    settings = make_settings(installed.work / "var", db_url=service_db, http_workers=1)
    # What StateDirectory= gives the services: var_dir, their own. Running as a user who can
    # write nothing else shows they need nothing else (ProtectSystem=strict).
    uid, gid = service_ids()
    for directory, _dirs, files in os.walk(settings.var_dir):
        for name in (directory, *(os.path.join(directory, f) for f in files)):
            os.chown(name, uid, gid)
    return settings


def test_installed_migrate_applies_the_packaged_sql(
    installed: Installed, service_settings: Settings,
) -> None:
    command = unit_command(installed, "autoprov-migrate.service")
    result = autoprov(installed, service_settings, *command, service_user=True)

    assert result.returncode == 0, result.stderr
    with psycopg.connect(service_settings.db_url) as conn:
        applied = [r[0] for r in conn.execute(
            "SELECT name FROM autoprov.schema_version ORDER BY version")]
        kamailio = conn.execute("SELECT to_regclass('subscriber'), to_regclass('location')")\
            .fetchone()
    assert applied == sorted(p.stem for p in (ROOT / "sql").glob("*.sql"))
    assert kamailio == ("subscriber", "location")
    again = autoprov(installed, service_settings, *command, service_user=True)
    assert (again.returncode, again.stdout.strip()) == (0, "database is up to date")


@contextlib.contextmanager
def tcp_forwarder(port: int, target: int) -> Iterator[None]:
    """127.0.0.1:port forwarded to 127.0.0.1:target: a database that appears at `port`."""
    server = socket.create_server(("127.0.0.1", port))
    server.settimeout(0.2)
    done = threading.Event()
    open_sockets = [server]

    def pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
            sink.shutdown(socket.SHUT_WR)

    def accept() -> None:
        while not done.is_set():
            with contextlib.suppress(TimeoutError):
                client, _ = server.accept()
                upstream = socket.create_connection(("127.0.0.1", target))
                open_sockets.extend((client, upstream))
                for pair in ((client, upstream), (upstream, client)):
                    threading.Thread(target=pump, args=pair, daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        for sock in open_sockets:
            sock.close()


def test_migration_waits_for_a_database_that_answers_later(
    installed: Installed, service_settings: Settings, pg_cluster: Cluster,
) -> None:
    port = free_port()
    later = service_settings.replace(
        db_url=service_settings.db_url.replace(f":{pg_cluster.port}/", f":{port}/"))
    command = unit_command(installed, "autoprov-migrate.service")
    migrate = start(installed, later, *command)
    try:
        deadline = time.monotonic() + 10
        while "waiting for the database" not in migrate.log.read_text():
            assert migrate.process.poll() is None, migrate.log.read_text()
            assert time.monotonic() < deadline, migrate.log.read_text()
            time.sleep(0.1)

        with tcp_forwarder(port, pg_cluster.port):
            assert migrate.process.wait(timeout=30) == 0, migrate.log.read_text()
    finally:
        migrate.stop()


@pytest.fixture(scope="module")
def migrated(installed: Installed, service_settings: Settings) -> Settings:
    command = unit_command(installed, "autoprov-migrate.service")
    result = autoprov(installed, service_settings, *command, service_user=True)
    assert result.returncode == 0, result.stderr
    return service_settings


@dataclasses.dataclass
class Running:
    process: subprocess.Popen[bytes]
    log: Path

    def wait_ready(self, probe: Callable[[], str | None]) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        problem: str | None = "not probed"
        while time.monotonic() < deadline and self.process.poll() is None:
            problem = probe()
            if problem is None:
                return
            time.sleep(0.2)
        raise AssertionError(f"not ready ({problem}):\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def start(installed: Installed, settings: Settings, *args: str) -> Running:
    """A service's ExecStart, as the service user, in its own process group."""
    log = installed.work / f"{'-'.join(args[:2])}.log"
    argv = as_service_user([str(installed.python), "-m", "autoprov.cli", *args])
    with log.open("ab") as out:
        process = subprocess.Popen(argv, cwd=installed.dest, env=installed_env(settings),
                                   stdin=subprocess.DEVNULL, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    return Running(process, log)


def sip_problem(settings: Settings) -> str | None:
    try:
        sipprobe.options(*sipprobe.parse_listen(settings.sip_listen[0]), timeout=0.5)
    except OSError as exc:
        return str(exc)
    return None


@pytest.fixture(scope="module")
def proxy(installed: Installed, migrated: Settings) -> Iterator[Running]:
    running = start(installed, migrated, *unit_command(installed, "autoprov-kamailio.service"))
    try:
        running.wait_ready(lambda: sip_problem(migrated))
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def provisioning(installed: Installed, migrated: Settings) -> Iterator[Running]:
    name = "autoprov-provisioning.service"
    material = autoprov(installed, migrated, *unit_command(installed, name, "ExecStartPre"),
                        service_user=True)
    assert material.returncode == 0, material.stderr
    running = start(installed, migrated, *unit_command(installed, name))
    try:
        # Not server.probe: as root it would look for the sockets under /run (front.socket_dir).
        # The front's probe goes through to the service: nginx answers 502 until it is there.
        material = autoprov(installed, migrated, *unit_command(installed, FRONT, "ExecStartPre"),
                            service_user=True)
        assert material.returncode == 0, material.stderr
        web_front = start(installed, migrated, *unit_command(installed, FRONT))
        try:
            web_front.wait_ready(lambda: front.probe(migrated))
            yield running
        finally:
            web_front.stop()
    finally:
        running.stop()


def add_line(settings: Settings) -> tuple[str, str, str]:
    user, domain, password = "u" + secrets.token_hex(5), "example.test", secrets.token_hex(8)
    with psycopg.connect(settings.db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO subscriber (username, domain, password) VALUES (%s, %s, %s)",
                     (user, domain, password))
    return user, domain, password


def test_installed_proxy_registers_a_phone_and_reloads_for_root(
    installed: Installed, migrated: Settings, proxy: Running,
) -> None:
    # `autoprov kamailio run` became Kamailio (systemd's main process), with installed files.
    pid = proxy.process.pid
    assert Path(os.readlink(f"/proc/{pid}/exe")).name == "kamailio"
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    # It starts from the site file only its user reads (the database URL), which includes ours.
    site = Path(argv[argv.index("-f") + 1])
    installed_cfg = installed.path(f"{VENV}/share/autoprov/kamailio.cfg")
    assert f'include_file "{installed_cfg}"' in site.read_text()
    assert (site.stat().st_uid, site.stat().st_mode & 0o777) == (service_ids()[0], 0o600)
    assert f'KEMI_SCRIPT="{installed.site_packages}/kemi/handler.py"' in argv
    assert os.stat(f"/proc/{pid}").st_uid == service_ids()[0]
    # Its shared memory is an anonymous mapping: nothing in /dev/shm or System V IPC, which the
    # unit's PrivateDevices= and RemoveIPC= would take away.
    maps = Path(f"/proc/{pid}/maps").read_text()
    assert "/dev/shm/" not in maps and "SYSV" not in maps
    _, host, port = sipprobe.parse_listen(migrated.sip_listen[0])
    assert sipprobe.options("udp", host, port) == (200, "Keepalive")
    # Its output (the journal's) is text lines made from Kamailio's JSON log by the log pipe.
    output = proxy.log.read_text(errors="replace")
    assert "INFO: <core> [main.c:" in output and '"idx":' not in output

    user, domain, password = add_line(migrated)
    mac = "001565" + secrets.token_hex(3)
    added = autoprov(installed, migrated, "device", "add", mac, "--vendor", "yealink",
                     "--model", "T46U", "--line", f"1={user}@{domain}")
    assert added.returncode == 0, added.stderr
    assert Phone(user, domain, password, (host, port)).register().ok
    shown = autoprov(installed, migrated, "device", "show", mac)
    assert f"line 1: {user}@{domain}  registered" in shown.stdout, shown.stdout + shown.stderr

    # ExecReload, and root (an operator) reloading a proxy that runs as the service user
    reload_command = unit_command(installed, "autoprov-kamailio.service", "ExecReload")
    assert autoprov(installed, migrated, *reload_command, service_user=True).returncode == 0
    reload = autoprov(installed, migrated, *reload_command)
    assert reload.returncode == 0, reload.stderr
    assert list(migrated.run_dir.glob("rpc-*")) == []


def test_installed_service_serves_the_bootstrap_file(
    installed: Installed, migrated: Settings, provisioning: Running,
) -> None:
    mac = "001565" + secrets.token_hex(3)
    added = autoprov(installed, migrated, "device", "add", mac, "--vendor", "yealink",
                     "--model", "T46U")
    assert added.returncode == 0, added.stderr
    session = requests.Session()
    session.trust_env = False

    reply = session.get(f"http://127.0.0.1:{migrated.http_port}/device/autoprov/bootstrap/"
                        f"{mac}.cfg", timeout=10)

    assert reply.status_code == 200
    assert (f"https://{migrated.public_host}:{migrated.https_port}/device/autoprov/config/"
            in reply.text)
    # Unprivileged, nginx reaches the service's sockets in var_dir, the one place it may write.
    assert (migrated.run_dir / "front" / "bootstrap.sock").is_socket()
    deadline = time.monotonic() + 5
    while "last config fetch: never" in (shown := autoprov(
            installed, migrated, "device", "show", mac).stdout) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert f"bootstrap {mac}.cfg" in shown
