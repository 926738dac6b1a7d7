"""The operators' pages: device states, resync, and the Cisco SPA bootstrap from a browser.

Served by `autoprov serve` on admin_port only (HTTPS, no client certificate), never on the
phones' ports; off (404) until admin_password is set.
"""
