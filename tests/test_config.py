from pathlib import Path

import pytest

from autoprov.config import ConfigError, Settings, load


def test_defaults_are_the_development_ports(tmp_path: Path) -> None:
    s = load({"AUTOPROV_CONFIG": str(tmp_path / "absent.toml")})
    assert s.sip_listen == ("udp:127.0.0.1:5060", "tcp:127.0.0.1:5060")
    assert (s.https_port, s.http_port, s.public_host) == (1444, 1445, "localhost")
    assert s.var_dir == (tmp_path / "var").resolve()


def test_toml_file_then_environment_overrides(tmp_path: Path) -> None:
    path = tmp_path / "autoprov.toml"
    path.write_text('public_host = "prov.example.com"\nhttp_port = 8080\n'
                    'sip_listen = ["udp:0.0.0.0:5060"]\nvar_dir = "state"\n')
    s = load({"AUTOPROV_CONFIG": str(path), "AUTOPROV_HTTP_PORT": "9090",
              "AUTOPROV_SIP_LISTEN": "udp:10.0.0.1:5060, tcp:10.0.0.1:5060"})
    assert s.public_host == "prov.example.com"
    assert s.http_port == 9090
    assert s.sip_listen == ("udp:10.0.0.1:5060", "tcp:10.0.0.1:5060")
    assert s.var_dir == tmp_path / "state"


def test_unknown_key_and_bad_value_are_clear_errors(tmp_path: Path) -> None:
    path = tmp_path / "autoprov.toml"
    path.write_text("htp_port = 1\n")
    with pytest.raises(ConfigError, match=r"unknown key.*htp_port"):
        load({"AUTOPROV_CONFIG": str(path)})
    with pytest.raises(ConfigError, match="http_port"):
        load({"AUTOPROV_CONFIG": str(tmp_path / "x.toml"), "AUTOPROV_HTTP_PORT": "many"})


def test_settings_round_trip_through_the_environment(tmp_path: Path) -> None:
    s = Settings(var_dir=tmp_path, sip_listen=("udp:127.0.0.1:1", "tcp:127.0.0.1:1"),
                 db_url="postgresql://x@127.0.0.1:1/y")
    env = {**s.as_env(), "AUTOPROV_CONFIG": str(tmp_path / "none.toml")}
    assert load(env) == s
