"""The operators' pages: device states, resync, and the Cisco SPA bootstrap from a browser; and
/healthz and /metrics for load balancers and Prometheus.

Served by `autoprov serve` on admin_port only (HTTPS, no client certificate), never on the
phones' ports; the pages are off (404) until admin_password is set, /healthz is always there.
"""
