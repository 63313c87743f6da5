"""Binary / encoding detection: decode source bytes to text, or say why we cannot.

UTF-8 first (most code), then BOM-marked UTF-8/16/32, then `charset_normalizer` for legacy
single-byte encodings. A NUL byte (without a UTF-16/32 BOM) or many control characters means binary.
"""

from __future__ import annotations

import codecs

_BOMS = [
    (codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"),
]
# control characters other than \t \n \r \f \v \x1b: too many of them means the file is binary
_CONTROL = bytes(set(range(32)) - {9, 10, 11, 12, 13, 27})
_CONTROL_TABLE = bytes.maketrans(b"", b"")


def _control_fraction(sample: bytes) -> float:
    if not sample:
        return 0.0
    return 1.0 - len(sample.translate(_CONTROL_TABLE, _CONTROL)) / len(sample)


def decode(data: bytes) -> tuple[str | None, str]:
    """Return ``(text, encoding)``, or ``(None, reason)`` with reason ``binary`` or ``undecodable``."""
    for bom, enc in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(enc), enc
            except UnicodeDecodeError:
                return None, "undecodable"
    head = data[:8192]
    if b"\x00" in head or _control_fraction(head) > 0.1:
        return None, "binary"
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    best = from_bytes(data, steps=5, chunk_size=512).best()
    if best is None or best.encoding is None:
        return None, "undecodable"
    text = str(best)
    # a guess that needs many replacement/odd characters is not a real decoding
    if text.count("\ufffd") > 0.01 * max(len(text), 1):
        return None, "undecodable"
    return text, best.encoding
