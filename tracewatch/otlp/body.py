"""Request bodies of the OTLP receiver: decompressed whole, or refused.

aiohttp's own decompression answers a gzip stream cut short with the part it got
(no end-of-stream or CRC check), which can parse as a smaller, valid export: the
receiver answered 200 for spans it never saw. Here a body is inflated member by
member with zlib, and it must end exactly where its last member ends, with each
member's CRC-32 and length checked (zlib does that at a member's end):

- a stream that stops before its trailer, a wrong CRC, bytes after the last member
  that are not another member: ``OtlpDecodeError`` (400);
- more than ``limit`` bytes once inflated: ``BodyTooLarge`` (413), found without
  inflating further (a 1 GiB bomb costs ``limit`` bytes, not 1 GiB).

Several gzip members in a row are one body (RFC 1952, 2.2). Pure: no I/O.
"""

from __future__ import annotations

import zlib

from tracewatch.otlp.mapping import OtlpDecodeError

__all__ = ["ENCODINGS", "BodyTooLarge", "decode_body"]

_GZIP = 16 + zlib.MAX_WBITS
_DEFLATE = zlib.MAX_WBITS
#: Content-Encoding values read, and their zlib window bits (None: as sent)
ENCODINGS: dict[str, int | None] = {
    "identity": None,
    "gzip": _GZIP,
    "x-gzip": _GZIP,
    "deflate": _DEFLATE,
}
_GZIP_MAGIC = b"\x1f\x8b"


class BodyTooLarge(ValueError):
    """A body over the limit once decompressed."""


def decode_body(raw: bytes, encoding: str, limit: int) -> bytes:
    """``raw`` as sent with Content-Encoding ``encoding`` (one of ``ENCODINGS``), inflated."""
    wbits = ENCODINGS[encoding]
    if wbits is None:
        if len(raw) > limit:
            raise BodyTooLarge(f"{len(raw)} bytes")
        return raw
    out = bytearray()
    rest = raw
    while True:
        rest = _inflate_member(rest, wbits, limit, out)
        if not rest:
            return bytes(out)
        if wbits != _GZIP or not rest.startswith(_GZIP_MAGIC):
            raise OtlpDecodeError(
                f"{len(rest)} bytes after the end of the {encoding} stream; "
                "send exactly one compressed body"
            )


def _inflate_member(data: bytes, wbits: int, limit: int, out: bytearray) -> bytes:
    """Inflate one member into ``out``; returns the bytes after it."""
    inflater = zlib.decompressobj(wbits)
    try:
        out += inflater.decompress(data, limit + 1 - len(out))
    except zlib.error as exc:
        raise OtlpDecodeError(f"the gzip/deflate body is broken: {exc}") from None
    if len(out) > limit:
        raise BodyTooLarge(f"over {limit} bytes once decompressed")
    if not inflater.eof:
        raise OtlpDecodeError(
            "the gzip/deflate body ends before its end of stream (truncated): "
            "send the whole compressed body"
        )
    return inflater.unused_data
