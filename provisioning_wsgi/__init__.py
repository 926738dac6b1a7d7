"""The provisioning web service: configs for phones on 1444 (mutual TLS) and 1445 (bootstrap)."""
