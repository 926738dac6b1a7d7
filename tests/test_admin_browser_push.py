"""What the bootstrap page has a browser send a phone: per-vendor, per-model data files."""

from __future__ import annotations

from pathlib import Path

import pytest

from autoprov.config import Settings
from provisioning_wsgi import browser_push

SETTINGS = Settings(public_host="prov.example.test", http_port=1445, https_port=1444)
MAC = "0002fd0a0b0c"


def override(root: Path, relative: str, text: str) -> Settings:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return SETTINGS.replace(template_dir=str(root))


def test_cisco_default_is_a_get_of_the_tls_config_url_for_the_phones_own_mac() -> None:
    push = browser_push.load(SETTINGS, "cisco", "SPA504G", MAC)

    assert push is not None
    assert (push.method, push.url) == ("GET", "http://{phone}/admin/resync")
    assert push.query == "https://prov.example.test:1444/device/autoprov/config/$MA.xml"


@pytest.mark.parametrize("vendor", ["yealink", "panasonic", "nosuch"])
def test_vendors_with_a_redirect_service_have_no_browser_push(vendor: str) -> None:
    assert browser_push.load(SETTINGS, vendor, "T46U", MAC) is None


def test_a_model_file_wins_and_the_operators_copy_wins_over_the_shipped_one(
    tmp_path: Path,
) -> None:
    settings = override(tmp_path, "cisco/browser/SPA112/resync.toml",
                        'method = "post"\nurl = "https://{phone}/resync"\n'
                        'params = ["profile={bootstrap_url}{mac}.xml", "reboot"]\n')
    override(tmp_path, "cisco/browser/resync.toml",
             'method = "GET"\nurl = "http://{phone}/x"\nparams = ["{config_url}"]\n')

    model = browser_push.load(settings, "cisco", "SPA112", MAC)
    other = browser_push.load(settings, "cisco", "SPA504G", MAC)

    assert model is not None and other is not None
    assert (model.method, model.url) == ("POST", "https://{phone}/resync")
    assert model.fields == [
        ("profile", f"http://prov.example.test:1445/device/autoprov/bootstrap/{MAC}.xml"),
        ("reboot", "0")]
    assert other.url == "http://{phone}/x" and other.source.is_relative_to(tmp_path)


@pytest.mark.parametrize("text,problem", [
    ('method = "PUT"\nurl = "http://{phone}/r"\nparams = []', "method"),
    ('method = "GET"\nurl = "http://phone/{phone}"\nparams = []', "url"),
    ('method = "GET"\nurl = "javascript:{phone}"\nparams = []', "url"),
    ('method = "GET"\nurl = "http://{phone}/r"\nparams = "x"', "params"),
    ('method = "GET"\nurl = ', "resync.toml"),
])
def test_a_broken_file_is_refused_with_its_name(tmp_path: Path, text: str,
                                                problem: str) -> None:
    settings = override(tmp_path, "cisco/browser/SPA504G/resync.toml", text)
    with pytest.raises(browser_push.BrowserPushError, match=problem) as raised:
        browser_push.load(settings, "cisco", "SPA504G", MAC)
    assert "SPA504G/resync.toml" in str(raised.value)
