"""The subject the web front passes on (RFC 2253, as nginx writes $ssl_client_s_dn) read back into
the certificate's attribute values, in which the requested file's MAC must stand."""

from __future__ import annotations

from provisioning_wsgi.identity import dn_values, subject_names_mac


def test_values_are_read_back_as_the_certificate_has_them() -> None:
    # Cisco's CN has commas; a multi-valued RDN is joined with "+"; non-ASCII is hex-escaped.
    dn = (r"CN=SPA-525G2\, MAC: 708105B37234\, Serial: CBT1,ST=708105B37234+L=K\C3\B6ln,"
          r"O=Cisco Systems\, Inc.,C=US")

    assert dn_values(dn) == ("SPA-525G2, MAC: 708105B37234, Serial: CBT1", "708105B37234",
                             "Köln", "Cisco Systems, Inc.", "US")
    assert dn_values("") == ()


def test_a_mac_is_named_only_where_it_stands_alone() -> None:
    yealink = dn_values("serialNumber=ffffffff-ffff-ffff-fff0-001565000062,CN=T46U")
    assert subject_names_mac(yealink, "001565000062")
    # Attribute names and separators are never part of a value: "C=" cannot extend a token.
    assert not subject_names_mac(dn_values("CN=a001565000062,C=US"), "001565000062")
    assert subject_names_mac(dn_values(r"CN=x\,001565000062,C=US"), "001565000062")
