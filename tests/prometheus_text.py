"""A strict reader of Prometheus' text exposition format 0.0.4, as /metrics must write it.

Stricter than Prometheus itself where the format leaves room: every family has one HELP and one
TYPE line before its samples, a sample belongs to the family above it, no series twice, no
timestamps, and a histogram's buckets are cumulative up to +Inf, which equals its _count.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_COMMENT = re.compile(rf"^# (HELP|TYPE) ({_NAME}) (.*)$")
_SAMPLE = re.compile(rf"^({_NAME})(?:\{{(.*)\}})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"')
_KINDS = {"counter", "gauge", "histogram", "summary", "untyped"}
_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

Labels = frozenset[tuple[str, str]]


class FormatError(AssertionError):
    pass


@dataclass
class Scrape:
    kinds: dict[str, str] = field(default_factory=dict)
    series: dict[tuple[str, Labels], float] = field(default_factory=dict)

    def value(self, name: str, **labels: str) -> float:
        return self.series[(name, frozenset(labels.items()))]

    def names(self) -> set[str]:
        return {name for name, _labels in self.series}


def _labels(text: str | None, line: str) -> Labels:
    if not text:
        return frozenset()
    found: list[tuple[str, str]] = []
    rest = text
    while rest:
        match = _LABEL.match(rest)
        if match is None:
            raise FormatError(f"bad labels: {line!r}")
        value = re.sub(r"\\(.)", lambda m: "\n" if m[1] == "n" else m[1], match[2])
        found.append((match[1], value))
        rest = rest[match.end():]
        if rest.startswith(","):
            rest = rest[1:]
            if not rest:
                raise FormatError(f"trailing comma: {line!r}")
        elif rest:
            raise FormatError(f"bad labels: {line!r}")
    if len({name for name, _ in found}) != len(found):
        raise FormatError(f"a label twice: {line!r}")
    return frozenset(found)


def _value(text: str, line: str) -> float:
    if text in ("+Inf", "-Inf", "NaN"):
        return float(text.replace("+", ""))
    if not re.fullmatch(r"-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?", text):
        raise FormatError(f"bad value: {line!r}")
    return float(text)


def parse(body: str) -> Scrape:
    if not body.endswith("\n"):
        raise FormatError("the body does not end with a line break")
    scrape = Scrape()
    helped: set[str] = set()
    family = ""
    for line in body[:-1].split("\n"):
        comment = _COMMENT.match(line)
        if comment:
            what, name, text = comment.groups()
            if what == "HELP":
                if name in helped or not text:
                    raise FormatError(f"HELP twice or empty: {line!r}")
                helped.add(name)
                continue
            if name in scrape.kinds or text not in _KINDS or name not in helped:
                raise FormatError(f"TYPE twice, unknown or without HELP: {line!r}")
            scrape.kinds[name] = text
            family = name
            continue
        sample = _SAMPLE.match(line)
        if sample is None:
            raise FormatError(f"not a HELP, TYPE or sample line: {line!r}")
        name = sample[1]
        allowed = {family}
        if scrape.kinds.get(family) == "histogram":
            allowed = {family + suffix for suffix in _HISTOGRAM_SUFFIXES}
        if name not in allowed:
            raise FormatError(f"{name} is not of the family above it ({family}): {line!r}")
        key = (name, _labels(sample[2], line))
        if key in scrape.series:
            raise FormatError(f"series twice: {line!r}")
        scrape.series[key] = _value(sample[3], line)
    for name, kind in scrape.kinds.items():
        if kind == "histogram":
            _check_histogram(scrape, name)
    return scrape


def _check_histogram(scrape: Scrape, name: str) -> None:
    buckets: dict[Labels, list[tuple[float, float]]] = {}
    for (series, labels), value in scrape.series.items():
        if series == name + "_bucket":
            le = dict(labels)["le"]
            buckets.setdefault(labels - {("le", le)}, []).append((float(le), value))
    if not buckets:
        raise FormatError(f"histogram {name} has no buckets")
    for labels, points in buckets.items():
        points.sort()
        counts = [count for _le, count in points]
        if counts != sorted(counts) or not math.isinf(points[-1][0]):
            raise FormatError(f"{name}{dict(labels)}: buckets not cumulative up to +Inf")
        if scrape.series.get((name + "_count", labels)) != counts[-1] or \
                (name + "_sum", labels) not in scrape.series:
            raise FormatError(f"{name}{dict(labels)}: _count is not the +Inf bucket, or no _sum")
