"""Prometheus' text exposition format, version 0.0.4: metric families in, the /metrics body out.

Only what /metrics needs: families of samples with labels, HELP and TYPE lines, names cut down
to the characters the format allows.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_NOT_IN_NAME = re.compile(r"[^a-zA-Z0-9_]")

Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Sample:
    value: float
    labels: Labels = ()
    # Appended to the family's name: "_bucket", "_sum", "_count" for a histogram.
    suffix: str = ""


@dataclass
class Family:
    name: str
    kind: str  # counter, gauge, histogram or untyped
    help: str
    samples: list[Sample] = field(default_factory=list)

    def add(self, value: float, *labels: tuple[str, str], suffix: str = "") -> None:
        self.samples.append(Sample(float(value), labels, suffix))


def metric_name(text: str) -> str:
    """`text` as a metric name: [a-zA-Z0-9_] only, never starting with a digit."""
    name = _NOT_IN_NAME.sub("_", text)
    return "_" + name if not name or name[0].isdigit() else name


def _label_value(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(value)


def _sample(name: str, sample: Sample) -> str:
    labels = ",".join(f'{key}="{_label_value(value)}"' for key, value in sample.labels)
    return f"{name}{sample.suffix}{{{labels}}} {_number(sample.value)}\n" if labels else \
        f"{name}{sample.suffix} {_number(sample.value)}\n"


def render(families: Iterable[Family]) -> bytes:
    """The body of a /metrics answer. A family whose name was already given is left out (the
    format allows each name once)."""
    out: list[str] = []
    seen: set[str] = set()
    for family in families:
        if family.name in seen:
            continue
        seen.add(family.name)
        out.append(f"# HELP {family.name} {_help(family.help)}\n")
        out.append(f"# TYPE {family.name} {family.kind}\n")
        out.extend(_sample(family.name, sample) for sample in family.samples)
    return "".join(out).encode()
