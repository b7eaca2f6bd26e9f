"""Decoding the protobuf exposition with ``protoc`` (an independent decoder) in tests.

The delimited stream is turned into one ``Scrape`` message (``tests/export/data/metrics.proto``)
and ``protoc --decode`` prints it in the text format, which :func:`parse_text_format` reads
into plain dicts: every field a list (repeated or not), messages as dicts.
"""

from __future__ import annotations

import codecs
import shutil
import subprocess
from pathlib import Path
from typing import Any

from ..conftest import need_service

PROTO_DIR = Path(__file__).parent / "data"

Message = dict[str, list[Any]]


def protoc() -> str:
    path = shutil.which("protoc")
    if path is None:
        need_service("protoc", "install the Debian package 'protobuf-compiler'")
    assert path is not None
    return path


def split_delimited(body: bytes) -> list[bytes]:
    """The messages of a length-delimited stream (read here, not with the encoder's code)."""
    out = []
    i = 0
    while i < len(body):
        length = shift = 0
        while True:
            byte = body[i]
            i += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        out.append(body[i : i + length])
        i += length
    assert i == len(body), "the stream ends inside a message"
    return out


def decode(body: bytes) -> list[Message]:
    """The ``MetricFamily`` messages of a delimited stream, as protoc reads them."""
    wrapped = bytearray()
    for message in split_delimited(body):
        wrapped += b"\x0a" + _varint(len(message)) + message
    result = subprocess.run(
        [
            protoc(),
            "--decode=io.prometheus.client.Scrape",
            f"-I{PROTO_DIR}",
            str(PROTO_DIR / "metrics.proto"),
        ],
        input=bytes(wrapped),
        capture_output=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    families: list[Message] = parse_text_format(result.stdout.decode("utf-8")).get("family", [])
    return families


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _scalar(text: str) -> Any:
    if text.startswith('"'):
        raw: bytes = codecs.escape_decode(text[1:-1].encode("utf-8"))[0]
        return raw.decode("utf-8")
    if text in ("inf", "-inf", "nan", "-nan", "-0"):
        return float(text.replace("-nan", "nan"))  # -0 is a double: int() would lose the sign
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text  # an enum value's name


def parse_text_format(text: str) -> Message:
    root: Message = {}
    stack = [root]
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line == "}":
            stack.pop()
        elif line.endswith("{"):
            child: Message = {}
            stack[-1].setdefault(line[:-1].strip(), []).append(child)
            stack.append(child)
        else:
            key, _, value = line.partition(": ")
            stack[-1].setdefault(key, []).append(_scalar(value))
    assert len(stack) == 1, "unbalanced protoc output"
    return root


def one(message: Message, key: str, default: Any = None) -> Any:
    """A singular field's value (``default`` when absent)."""
    values = message.get(key)
    if not values:
        return default
    assert len(values) == 1, (key, values)
    return values[0]


def labels(metric: Message) -> list[tuple[str, str]]:
    return [(one(p, "name", ""), one(p, "value", "")) for p in metric.get("label", [])]


__all__ = ["decode", "labels", "one", "parse_text_format", "protoc", "split_delimited"]
