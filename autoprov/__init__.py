"""autoprov: zero-touch provisioning and SIP resync for IP phones."""

__version__ = "0.1.0"
