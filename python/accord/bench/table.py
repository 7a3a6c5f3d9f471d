"""nccl-tests style output for accord's benchmarks: ``#`` metadata lines, a ``#`` column header
(names, then units), aligned data lines, ``#`` notes, and the same rows as JSON.

It lives inside the installed package so ``python -m accord.bench`` works from a wheel; the
scripts in the source tree's ``benchmarks/`` may import it from here too::

    table = Table([Column("size", "(B)", 12, "d"), Column("time", "(us)", 10, ".1f")])
    print_metadata({"date": ..., "ranks": 4})
    table.print_header()
    table.print_row(size=1024, time=12.5)
    note("verdict: PASS")
    write_json("results/x.json", {"metadata": meta, "rows": table.rows})
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

__all__ = ["Column", "Table", "note", "print_metadata", "write_json", "parse_bytes",
           "human_bytes", "load_average"]


@dataclass
class Column:
    """One column: ``key`` (row dict key), unit line, width, format spec (``"d"``, ``".2f"``,
    ``"s"``...) and an optional header title (default: the key). None and NaN print as ``-``."""
    key: str
    unit: str = ""
    width: int = 10
    fmt: str = "s"
    title: str | None = None

    def header(self) -> str:
        return f"{(self.title or self.key):>{self.width}}"

    def format(self, value) -> str:
        if value is None or (isinstance(value, float) and value != value):
            return f"{'-':>{self.width}}"
        try:
            return f"{value:>{self.width}{self.fmt}}"
        except (ValueError, TypeError):
            return f"{str(value):>{self.width}}"


class Table:
    """Rows are printed as they are added (long sweeps show progress) and kept in ``rows``
    (dicts, including any extra keys the caller passed) for the JSON dump."""

    def __init__(self, columns: Sequence[Column], sep: str = " ", file=None):
        self.columns = list(columns)
        self.sep = sep
        self.file = file
        self.rows: list[dict] = []

    def header_lines(self) -> list[str]:
        names = self.sep.join(c.header() for c in self.columns)
        units = self.sep.join(f"{c.unit:>{c.width}}" for c in self.columns)
        # the leading "#" takes the place of the first column's first (blank) character
        return ["#" + names[1:], "#" + units[1:]]

    def print_header(self) -> None:
        for line in self.header_lines():
            print(line, file=self.file)
        (self.file or sys.stdout).flush()

    def format_row(self, row: dict) -> str:
        return self.sep.join(c.format(row.get(c.key)) for c in self.columns)

    def print_row(self, row: dict | None = None, **values) -> dict:
        row = dict(row or {}, **values)
        self.rows.append(row)
        print(self.format_row(row), file=self.file, flush=True)
        return row


def note(text: str = "", file=None) -> None:
    """A ``#`` comment line (section titles, verdicts) between or after table rows."""
    print(f"# {text}".rstrip(), file=file, flush=True)


def print_metadata(meta: dict, file=None) -> None:
    """One ``# key : value`` line per entry (dicts inline as ``k=v`` pairs), then ``#``."""
    width = max((len(k) for k in meta), default=0)
    for key, value in meta.items():
        if isinstance(value, dict):
            value = " ".join(f"{k}={v}" for k, v in value.items())
        elif isinstance(value, (list, tuple)):
            value = ", ".join(str(v) for v in value)
        lines = str(value).splitlines() or [""]
        print(f"# {key:<{width}} : {lines[0]}", file=file)
        for cont in lines[1:]:
            print(f"# {'':<{width}}   {cont}", file=file)
    print("#", file=file, flush=True)


def write_json(path, payload: dict) -> Path:
    """Write ``payload`` as indented JSON (numpy scalars as numbers), creating parent folders."""
    p = Path(path)
    if p.parent != Path(""):
        p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "w") as f:
        json.dump(payload, f, indent=2, default=_json_default)
        f.write("\n")
    return p


def _json_default(obj):
    item = getattr(obj, "item", None)  # numpy scalars
    if callable(item):
        try:
            return item()
        except (TypeError, ValueError):
            pass
    return str(obj)


_SUFFIX = {"": 1, "B": 1, "K": 1 << 10, "KB": 1 << 10, "KIB": 1 << 10, "M": 1 << 20,
           "MB": 1 << 20, "MIB": 1 << 20, "G": 1 << 30, "GB": 1 << 30, "GIB": 1 << 30}


def parse_bytes(text: str) -> int:
    """``"4096"``, ``"4K"``, ``"64M"``, ``"1G"`` (binary multiples, like nccl-tests) -> bytes."""
    s = str(text).strip().upper()
    i = len(s)
    while i > 0 and not (s[i - 1].isdigit() or s[i - 1] == "."):
        i -= 1
    number, suffix = s[:i], s[i:].strip()
    if not number or suffix not in _SUFFIX:
        raise ValueError(f"not a byte count: {text!r} (use e.g. 4096, 4K, 64M, 1G)")
    value = float(number) * _SUFFIX[suffix]
    if value != int(value) or value < 0:
        raise ValueError(f"not a whole, non-negative byte count: {text!r}")
    return int(value)


def human_bytes(n: int) -> str:
    """1024 -> '1 KiB', 67108864 -> '64 MiB', 1000 -> '1000 B'."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            v = n / scale
            return f"{v:g} {unit}" if v == int(v) else f"{v:.3g} {unit}"
    return f"{n} B"


def load_average() -> str:
    """The 1/5/15-minute load averages (other work on the machine makes timings noisy)."""
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except (OSError, AttributeError):
        return "n/a"


def cpu_name() -> str:
    """The processor's model name, for the metadata lines."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or platform.machine()
