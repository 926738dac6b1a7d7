"""Timestamps for text written per request (access lines, fetch records): the date and time of
day are formatted once a second, and only the fraction per line. `time.strftime` per line cost
more than the rest of the line."""

from __future__ import annotations

import time
from collections.abc import Callable


class SecondPrefix:
    """"YYYY-MM-DD HH:MM:SS" of a time, in the zone `convert` gives (time.gmtime, time.localtime),
    remembered for the last second asked."""

    def __init__(self, convert: Callable[[float], time.struct_time]) -> None:
        self._convert = convert
        self._second = -1
        self._text = ""

    def __call__(self, second: int) -> str:
        if second != self._second:
            self._second = second
            self._text = time.strftime("%Y-%m-%d %H:%M:%S", self._convert(second))
        return self._text
