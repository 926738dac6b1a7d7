"""The provisioning service's batched log writer: fail2ban's line shape, order, and nothing lost."""

from __future__ import annotations

import io
import logging
import os
import re
import time

from provisioning_wsgi.logsink import BatchedHandler

LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} autoprov-provisioning\[(\d+)\] "
                  r"(INFO|WARNING) (.*)$")


def _logger(handler: BatchedHandler) -> logging.Logger:
    logger = logging.getLogger(f"test-logsink-{id(handler)}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    return logger


def test_access_lines_and_records_share_one_shape_and_keep_their_order() -> None:
    out = io.StringIO()
    handler = BatchedHandler(out)
    logger = _logger(handler)
    handler.access("access client=192.0.2.1 port=tls method=GET file=a.cfg status=200")
    logger.warning("denied client=%s port=tls reason=%s file=b.cfg", "192.0.2.2", "expired")
    handler.access("access client=192.0.2.3 port=bootstrap method=GET file=c.cfg status=404")
    handler.close()

    lines = out.getvalue().splitlines()
    assert [LINE.match(line).group(2, 3) for line in lines] == [  # type: ignore[union-attr]
        ("INFO", "access client=192.0.2.1 port=tls method=GET file=a.cfg status=200"),
        ("WARNING", "denied client=192.0.2.2 port=tls reason=expired file=b.cfg"),
        ("INFO", "access client=192.0.2.3 port=bootstrap method=GET file=c.cfg status=404"),
    ]
    assert {LINE.match(line).group(1) for line in lines} == {str(os.getpid())}  # type: ignore[union-attr]


def test_a_warning_is_written_without_waiting_for_the_batch() -> None:
    out = io.StringIO()
    handler = BatchedHandler(out)
    logger = _logger(handler)
    handler.access("access client=192.0.2.1 port=tls method=GET file=a.cfg status=200")
    logger.warning("denied client=192.0.2.9 port=tls reason=tls-handshake detail=x")
    deadline = time.monotonic() + 0.05  # well under the batch interval
    while "denied" not in out.getvalue() and time.monotonic() < deadline:
        time.sleep(0.001)
    try:
        assert "denied client=192.0.2.9" in out.getvalue()
        assert out.getvalue().index("access") < out.getvalue().index("denied")
    finally:
        handler.close()


def test_many_lines_from_many_calls_all_arrive_whole() -> None:
    out = io.StringIO()
    handler = BatchedHandler(out)
    for i in range(5000):
        handler.access(f"access client=192.0.2.1 port=tls method=GET file={i}.cfg status=200")
    handler.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 5000
    assert all(line.endswith(f"file={i}.cfg status=200") for i, line in enumerate(lines))


def test_a_line_logged_after_close_is_still_written() -> None:
    # Shutdown logs ("worker 0 stopped") can come after the writer thread is gone.
    out = io.StringIO()
    handler = BatchedHandler(out)
    logger = _logger(handler)
    handler.close()
    logger.info("worker %d stopped", 0)
    handler.access("access client=192.0.2.1 port=tls method=GET file=a.cfg status=200")
    assert [LINE.match(line).group(3) for line in out.getvalue().splitlines()] == [  # type: ignore[union-attr]
        "worker 0 stopped",
        "access client=192.0.2.1 port=tls method=GET file=a.cfg status=200",
    ]
