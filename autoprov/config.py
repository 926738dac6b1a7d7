"""One configuration for every part: a TOML file plus ``AUTOPROV_<KEY>`` overrides.

Kamailio's embedded Python, the web service and the CLI all call :func:`load`, so a value
set once is seen everywhere. Relative paths are resolved against the directory of the
configuration file (by default the checkout's autoprov.toml, or /etc/autoprov/autoprov.toml when
installed: autoprov.paths).
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from autoprov import paths

# The folder holding the packages: the checkout's top, or site-packages (see autoprov.paths).
ROOT = paths.CODE_ROOT
ENV_PREFIX = "AUTOPROV_"


class ConfigError(ValueError):
    """A configuration value is missing, unknown or of the wrong type."""


@dataclasses.dataclass(frozen=True)
class Settings:
    # Where state lives: TLS material, logs, pid files, the private database cluster (as root,
    # var_dir/pg is a symlink to it: see autoprov.pgcluster.checkout_base).
    var_dir: Path = Path("var")
    # Empty: use this checkout's private PostgreSQL cluster on db_port.
    db_url: str = ""
    db_port: int = 5433
    kamailio_schema_dir: Path = Path("/usr/share/kamailio/postgres")
    kamailio_binary: str = "kamailio"
    # Kamailio's listen sockets, in its own syntax (proto:address:port).
    sip_listen: tuple[str, ...] = ("udp:127.0.0.1:5060", "tcp:127.0.0.1:5060")
    # The transport the configs we serve tell phones to use (udp, tcp or tls; a device's own
    # autoprov.device.sip_transport wins), with the port of the first socket of it in sip_listen;
    # empty: the first socket's.
    sip_transport: str = ""
    sip_children: int = 4
    sip_shm_mb: int = 256
    sip_debug: int = 2
    # Identifies this node in location.server_id when several proxies share one database.
    sip_server_id: int = 1
    # What our SIP replies and NOTIFYs name as Server/User-Agent (not Kamailio and its version).
    sip_server_header: str = "autoprov"
    # A source address with this many refused REGISTERs (wrong password, unknown user), each less
    # than sip_auth_fail_window_s after the previous one, gets no answer for sip_ban_s seconds.
    sip_auth_fail_limit: int = 10
    sip_auth_fail_window_s: int = 60
    sip_ban_s: int = 300
    # Requests per 2 s from one address above which pike bans it too (a floods' guard: a fleet of
    # thousands behind one NAT, keepalives and a registration storm after an outage, stays under).
    sip_pike_per_2s: int = 3000
    # A phone's verified credentials (HA1 only, in Kamailio's shared memory, never on disk) are
    # trusted this long without asking the database: refreshes cost no query, and known phones
    # keep registering through a database outage. A password changed or a subscriber deleted in
    # SQL drops its entry at once (sql/010_credential_cache.sql).
    sip_auth_cache_s: int = 86400
    # Retry-After of the 503 a REGISTER gets when the database is away and its phone is unknown.
    sip_db_retry_after_s: int = 30
    # Calls: where calls to numbers that are no local subscriber, and to other domains, go
    # (a SIP URI, e.g. sip:pbx.example.com:5060;transport=udp; empty: nowhere, 404).
    sip_upstream: str = ""
    # What a number is: a Request-URI user matching this.
    sip_upstream_pattern: str = r"^\+?[0-9]+$"
    # Addresses (CIDRs) whose requests need no digest and may reach local subscribers; the
    # upstream's own address is trusted too.
    sip_trusted_sources: tuple[str, ...] = ()
    # Media relay: rtpengine's control (ng) socket, e.g. "udp:127.0.0.1:2223". Set, every call's
    # SDP is rewritten so that RTP flows through rtpengine (two phones behind different NATs hear
    # each other); empty: phones send RTP to each other directly.
    rtpengine_socket: str = ""
    # Start rtpengine with the stack (`make run`/`up`); false: it runs elsewhere.
    rtpengine_run: bool = True
    # The address rtpengine relays media on, written into the SDP phones get; empty: the address
    # of the first sip_listen socket. Its RTP ports: rtpengine_port_min to rtpengine_port_max.
    rtpengine_interface: str = ""
    rtpengine_port_min: int = 30000
    rtpengine_port_max: int = 40000
    # The logs `make up` writes (var/log/*.log) rotate at this size, keeping log_keep old files.
    log_max_mb: int = 100
    log_keep: int = 5
    # Per-model Event header for check-sync NOTIFYs, "MODEL=EVENT" (vendor defaults are in SQL,
    # autoprov.vendor.notify_event), e.g. "SPA504G=resync".
    notify_event_overrides: tuple[str, ...] = ()
    # How often the proxy's resync timer looks at the database when no NOTIFY wakes it (ms).
    resync_poll_ms: int = 2000
    public_host: str = "localhost"
    http_bind: str = "127.0.0.1"
    http_port: int = 1445
    https_port: int = 1444
    # Processes serving the web ports (Python runs one core per process); 0 = one per CPU.
    http_workers: int = 0
    # Empty: development material created under var_dir/tls.
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    # A second, ECDSA certificate for phones that offer ECDSA (much cheaper handshakes); empty:
    # none, or the development one when tls_cert is empty too.
    tls_ecdsa_cert: str = ""
    tls_ecdsa_key: str = ""
    # Operators' template overrides: a file here wins over the shipped one of the same name.
    template_dir: str = ""
    # Firmware images phones are pointed at: firmware_dir/VENDOR/MODEL/FILE (docs/firmware.md),
    # served by the web front itself on both phone ports; empty: no firmware.
    firmware_dir: str = ""
    # Zero-touch redirect services (see autoprov/redirect). An empty endpoint disables that
    # vendor's registrations (its jobs are marked skipped, with the reason).
    yealink_rps_url: str = ""
    yealink_rps_user: str = ""
    yealink_rps_password: str = dataclasses.field(default="", repr=False)
    # Empty: the plain-HTTP bootstrap base, http://public_host:http_port/device/autoprov/bootstrap/
    yealink_rps_server_url: str = ""
    panasonic_rcs_url: str = ""
    panasonic_rcs_user: str = ""
    panasonic_rcs_password: str = dataclasses.field(default="", repr=False)
    # Empty: https://public_host:https_port/device/autoprov/config/Config{MAC}.cfg
    panasonic_rcs_phone_url: str = ""
    # Snom SRAPS, XML-RPC (https://secure-provisioning.snom.com:8083/xmlrpc/); empty: off.
    snom_sraps_url: str = ""
    snom_sraps_user: str = ""
    snom_sraps_password: str = dataclasses.field(default="", repr=False)
    # Empty: http://public_host:http_port/device/autoprov/bootstrap/snom-{mac}.htm
    snom_sraps_phone_url: str = ""
    # Grandstream GDMS Open API (https://www.gdms.cloud, EU https://eu.gdms.cloud); empty: off.
    # Its API-developer credentials (API ID, secret key), the account's login, and the site new
    # devices go to (GDMS requires one).
    gdms_url: str = ""
    gdms_username: str = ""
    gdms_password: str = dataclasses.field(default="", repr=False)
    gdms_client_id: str = ""
    gdms_client_secret: str = dataclasses.field(default="", repr=False)
    gdms_site_id: int = 0
    # Where GDMS points the phone (P212/P237); empty: http://public_host:http_port/device/autoprov/bootstrap
    gdms_config_server: str = ""
    # CA bundle the vendors' HTTPS certificates are verified with; empty: the certifi bundle.
    redirect_ca_bundle: str = ""
    redirect_timeout_ms: int = 10000
    # Back-off after a temporary failure: doubles from initial up to max, retried until done.
    redirect_retry_initial_ms: int = 30000
    redirect_retry_max_ms: int = 3600000
    # Fallback poll when no NOTIFY wakes the redirect worker.
    redirect_poll_ms: int = 30000
    # Operators' pages (device states, resync, Cisco SPA browser bootstrap): HTTPS on their own
    # port, as browsers have no phone client certificate for https_port; 0 = no listener.
    admin_port: int = 1446
    admin_user: str = "admin"
    # Empty: the pages are off (they answer 404; /healthz is served all the same).
    admin_password: str = dataclasses.field(default="", repr=False)
    # Prometheus' login to /metrics on admin_port (`Authorization: Bearer ...`), besides the
    # pages' one; empty: none. /metrics is 404 while neither is set.
    admin_metrics_token: str = dataclasses.field(default="", repr=False)
    # A certificate browsers trust; empty: tls_cert / tls_key (or the development ones).
    admin_tls_cert: str = ""
    admin_tls_key: str = ""
    # Oldest TLS version https_port accepts: "1.0" lets old Cisco SPA firmware in.
    tls_min_version: str = "1.2"
    # The web front (autoprov/front.py): how long a client may take to send its request (and
    # to read the answer), how long a kept-alive connection may idle, how large the request
    # line and each header line may be, requests under way at once per client address.
    front_timeout_s: int = 10
    front_keepalive_s: int = 15
    front_max_header_kb: int = 8
    front_connections_per_address: int = 100
    # The front's log of the fetches it answered from published files (fetches.log, read and
    # recorded by the service) is rotated past this size.
    fetch_log_rotate_kb: int = 65536

    @property
    def kamailio_cfg(self) -> Path:
        return paths.KAMAILIO_CFG

    @property
    def run_dir(self) -> Path:
        return self.var_dir / "run"

    @property
    def log_dir(self) -> Path:
        return self.var_dir / "log"

    @property
    def tls_dir(self) -> Path:
        return self.var_dir / "tls"

    @property
    def rpc_socket(self) -> Path:
        return self.run_dir / "kamailio-rpc.sock"

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    def as_env(self) -> dict[str, str]:
        """The settings as AUTOPROV_* variables, for child processes (Kamailio's Python)."""
        env = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, tuple):
                value = ",".join(value)
            env[ENV_PREFIX + field.name.upper()] = str(value)
        return env


def _coerce(name: str, default: Any, raw: Any) -> Any:
    """Turn a TOML or environment value into the type of the field's default."""
    try:
        if isinstance(default, bool):
            if isinstance(raw, str):
                return raw.strip().lower() in {"1", "true", "yes", "on"}
            return bool(raw)
        if isinstance(default, int):
            if isinstance(raw, bool):
                raise TypeError
            return int(raw)
        if isinstance(default, tuple):
            items = raw.split(",") if isinstance(raw, str) else list(raw)
            return tuple(str(i).strip() for i in items if str(i).strip())
        if isinstance(default, Path):
            return Path(str(raw))
        if not isinstance(raw, str):
            raise TypeError
        return raw
    except (TypeError, ValueError):
        raise ConfigError(f"configuration key {name!r}: cannot use {raw!r}") from None


def config_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(env.get(ENV_PREFIX + "CONFIG") or paths.DEFAULT_CONFIG).resolve()


def load(env: Mapping[str, str] | None = None) -> Settings:
    """Read the TOML file (if present) and apply AUTOPROV_* overrides."""
    env = os.environ if env is None else env
    path = config_path(env)
    values: dict[str, Any] = {}
    if path.exists():
        try:
            values = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: {exc}") from None
    defaults = Settings()
    known = {f.name: getattr(defaults, f.name) for f in dataclasses.fields(Settings)}
    unknown = set(values) - set(known)
    if unknown:
        raise ConfigError(f"{path}: unknown key(s): {', '.join(sorted(unknown))}")
    chosen: dict[str, Any] = {}
    for name, default in known.items():
        raw = env.get(ENV_PREFIX + name.upper(), values.get(name))
        if raw is not None:
            chosen[name] = _coerce(name, default, raw)
    base = path.parent
    for name, default in known.items():
        value = chosen.get(name, default)
        if isinstance(default, Path) and not value.is_absolute():
            chosen[name] = (base / value).resolve()
    for name in ("tls_cert", "tls_key", "tls_client_ca", "template_dir", "firmware_dir",
                 "redirect_ca_bundle",
                 "admin_tls_cert", "admin_tls_key"):
        if chosen.get(name):
            chosen[name] = str((base / chosen[name]).resolve())
    transport = chosen.get("sip_transport", "")
    if transport not in ("", "udp", "tcp", "tls"):
        raise ConfigError(f"configuration key 'sip_transport': {transport!r} is not udp, tcp "
                          "or tls")
    if transport and not any(a.lower().startswith(transport + ":")
                             for a in chosen.get("sip_listen", defaults.sip_listen)):
        raise ConfigError(f"configuration key 'sip_transport': {transport!r}, but sip_listen "
                          "has no such socket")
    _check_rtpengine(chosen, defaults)
    return Settings(**chosen)


_RTPENGINE_SOCKET = re.compile(r"^udp6?:(\[[0-9a-fA-F:.]+\]|[^:\[\]\s]+):([0-9]{1,5})$")


def _check_rtpengine(chosen: dict[str, Any], defaults: Settings) -> None:
    socket = chosen.get("rtpengine_socket", "")
    if socket and not _RTPENGINE_SOCKET.match(socket):
        raise ConfigError(f"configuration key 'rtpengine_socket': {socket!r} is not "
                          "udp:HOST:PORT")
    low = chosen.get("rtpengine_port_min", defaults.rtpengine_port_min)
    high = chosen.get("rtpengine_port_max", defaults.rtpengine_port_max)
    if not 1024 <= low < high <= 65535:
        raise ConfigError(f"configuration keys 'rtpengine_port_min'/'rtpengine_port_max': "
                          f"{low}-{high} is not a port range above 1023")
