"""PII redaction, the StarCoder way: emails, public IP addresses, secrets/keys, passwords.

- emails -> ``<EMAIL>``; public IPv4/IPv6 -> one of a few fixed private addresses of the same
  family, chosen by a hash of the value (the same value always gets the same replacement); private,
  loopback, reserved, link-local, multicast and well-known DNS resolvers are kept, and version strings
  (``version 1.2.3.4``, ``v1.2.3.4``, all-single-digit quads) are not IPs;
- secrets -> ``<KEY>``: detect-secrets plugins (AWS, GitHub, Slack, Stripe, JWT, private keys,
  high-entropy base64/hex strings...) with filters against hashes, UUIDs, ids, templated and
  sequential strings; private-key blocks are redacted whole;
- passwords in assignments (``password = "..."``) -> ``<PASSWORD>``.
Each redaction is reported as ``(start, end, type, detector, replacement)`` on the original text;
the secret itself is never stored.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import dataclass
from functools import lru_cache

# each pattern starts with a literal or a narrow class (fast scanning); boundaries are checked after
EMAIL_DOMAIN = re.compile(r"@(?:[A-Za-z0-9-]{1,63}\.)+[A-Za-z]{2,24}(?![\w-])")
EMAIL_LOCAL = re.compile(r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}$")
IPV4 = re.compile(r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}")
IPV6 = re.compile(r"[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{0,4}){2,7}")
_PASSWORD_WORDS = ("pass", "pwd", "secret_key", "api_key")
# cheap gates: patterns that start with a literal are scanned by re's fast literal search
_IPV4_HINT = re.compile(r"\.\d{1,3}\.\d{1,3}\.")
_IPV6_HINT = re.compile(r":[0-9A-Fa-f]{0,4}:")
PRIVATE_KEY = re.compile(r"-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY( BLOCK)?-----(.*?)-----END \1PRIVATE KEY\2?-----",
                         re.DOTALL)
PASSWORD = re.compile(r"(?i)\b(?:password|passwd|pwd|passphrase|db_pass|secret_key|api_key)\b[\"']?\s*(?:=|:|:=)\s*"
                      r"[rbuf]?([\"'])([^\"'\s]{4,128})\1")
_VERSION_BEFORE = re.compile(r"(?i)(?:version|ver|release|rev|v)\s*[:=]?\s*[\"']?$")
# a line can hold a secret only with a long token, a quoted hex run, a key header or URL credentials
# a line can hold a secret only with a 20+ char token (every detector's key format is at least that
# long), a quoted hex run, a key header or credentials in a URL
_CANDIDATE_LINE = re.compile(r"[A-Za-z0-9+/=_\-]{20,}|[\"'][0-9a-fA-F]{8,}[\"']|PRIVATE KEY|://[^\s:@/]+:[^\s@/]+@")
_HASH_LIKE = re.compile(r"^[0-9a-fA-F]+$")
_PLACEHOLDER = re.compile(r"[{}$<>%*]|^(x+|changeme|password|passwd|secret|example|test|dummy|none|null)$",
                          re.IGNORECASE)

DNS_SERVERS = frozenset({
    "8.8.8.8", "8.8.4.4", "1.1.1.1", "1.0.0.1", "9.9.9.9", "149.112.112.112", "208.67.222.222",
    "208.67.220.220", "64.6.64.6", "64.6.65.6", "2001:4860:4860::8888", "2001:4860:4860::8844",
    "2606:4700:4700::1111", "2606:4700:4700::1001", "2620:fe::fe", "2620:fe::9",
})
IPV4_REPLACEMENTS = ("10.0.12.34", "172.16.45.67", "192.168.78.90", "10.11.22.33", "192.168.201.7")
IPV6_REPLACEMENTS = ("fd00:1234:5678::1", "fd4e:a1b2:c3d4::42", "fdab:cdef:0123::7", "fd12:3456:789a::abc")
SECRET_PLUGINS = (
    "AWSKeyDetector", "ArtifactoryDetector", "AzureStorageKeyDetector", "BasicAuthDetector", "CloudantDetector",
    "DiscordBotTokenDetector", "GitHubTokenDetector", "GitLabTokenDetector", "IbmCloudIamDetector",
    "IbmCosHmacDetector", "JwtTokenDetector", "MailchimpDetector", "NpmDetector", "OpenAIDetector",
    "PypiTokenDetector", "SendGridDetector", "SlackDetector", "SoftlayerDetector", "SquareOAuthDetector",
    "StripeDetector", "TelegramBotTokenDetector", "TwilioKeyDetector", "Base64HighEntropyString",
    "HexHighEntropyString",
)


@dataclass(frozen=True)
class Redaction:
    start: int
    end: int
    type: str  # email | ip_address | key | password
    detector: str
    replacement: str


def _pick(value: str, pool: tuple[str, ...]) -> str:
    return pool[int.from_bytes(hashlib.sha256(value.encode()).digest()[:4], "big") % len(pool)]


def _ip_replacement(text: str, m: re.Match) -> str | None:
    value = m.group(0)
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        return None
    if value in DNS_SERVERS or str(ip) in DNS_SERVERS or not ip.is_global:
        return None
    if ip.version == 4:
        line_start = text.rfind("\n", 0, m.start()) + 1
        if _VERSION_BEFORE.search(text[max(line_start, m.start() - 20): m.start()]):
            return None
        if all(len(part) == 1 for part in value.split(".")):
            return None  # 1.2.3.4-style quads are version numbers far more often than hosts
        return _pick(value, IPV4_REPLACEMENTS)
    if value.count(":") < 3 and "::" not in value or sum(c.isdigit() for c in value) == 0:
        return None
    return _pick(str(ip), IPV6_REPLACEMENTS)


@lru_cache(maxsize=1)
def _plugins() -> list:
    from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class

    classes = {cls.__name__: cls for cls in get_mapping_from_secret_type_to_class().values()}
    return [classes[name]() for name in SECRET_PLUGINS if name in classes]


def _is_false_secret(secret: str, line: str, plugin: object) -> bool:
    """Filters from detect-secrets (uuid, id strings, templates, sequences) plus hash digests."""
    from detect_secrets.filters import heuristic

    if _HASH_LIKE.match(secret) and len(secret) in (32, 40, 56, 64, 96, 128):
        return True  # md5/sha1/sha2 digests are checksums, not credentials
    return (heuristic.is_potential_uuid(secret) or heuristic.is_likely_id_string(secret, line, plugin)
            or heuristic.is_templated_secret(secret) or heuristic.is_sequential_string(secret)
            or heuristic.is_not_alphanumeric_string(secret))


def _line_at(text: str, pos: int) -> str:
    return text[text.rfind("\n", 0, pos) + 1: (text.find("\n", pos) + 1 or len(text) + 1) - 1]


def _secret_spans(text: str) -> list[Redaction]:
    """detect-secrets plugins run over the whole text at once (their patterns never span lines),
    which is ~20x faster than its line-by-line scan; the filters still see the line of each hit."""
    from detect_secrets.plugins.high_entropy_strings import HighEntropyStringsPlugin

    out: list[Redaction] = []
    for m in PRIVATE_KEY.finditer(text):
        out.append(Redaction(m.start(3), m.end(3), "key", "PrivateKeyBlock", "<KEY>"))
    # keep only candidate lines, joined; `starts` maps positions back to the original text
    lines, starts, last = [], [], -1
    for m in _CANDIDATE_LINE.finditer(text):
        begin = text.rfind("\n", 0, m.start()) + 1
        if begin == last:
            continue  # this line is taken already
        end = text.find("\n", m.end())
        end = len(text) if end < 0 else end + 1
        lines.append(text[begin:end])
        starts.append(begin)
        last = begin
    if not lines:
        return out
    sub = "".join(lines)
    offsets = [0]
    for line in lines[:-1]:
        offsets.append(offsets[-1] + len(line))
    import bisect

    def orig(p: int) -> int:
        k = bisect.bisect_right(offsets, p) - 1
        return starts[k] + p - offsets[k]

    for plugin in _plugins():
        name = type(plugin).__name__
        if isinstance(plugin, HighEntropyStringsPlugin):
            # entropy > 4.5 (base64) / 3.0 (hex) needs at least 23 / 9 distinct characters
            min_len = 20 if plugin.entropy_limit > 4 else 8
            values = {v for v in plugin.analyze_string(sub) if len(v) >= min_len
                      and plugin.calculate_shannon_entropy(v) > plugin.entropy_limit}
        else:
            values = set(plugin.analyze_string(sub))
        for secret in sorted(values):
            if not secret or len(secret) < 6:
                continue
            for sm in re.finditer(re.escape(secret), sub):
                if not _is_false_secret(secret, _line_at(sub, sm.start()), plugin):
                    out.append(Redaction(orig(sm.start()), orig(sm.start()) + len(secret), "key", name, "<KEY>"))
    return out


def find_pii(text: str, secrets: bool = True) -> list[Redaction]:
    """Non-overlapping redactions sorted by start (earlier/longer spans win overlaps)."""
    spans: list[Redaction] = []
    for m in EMAIL_DOMAIN.finditer(text) if "@" in text else ():
        local = EMAIL_LOCAL.search(text, max(0, m.start() - 64), m.start())
        if local is not None:
            spans.append(Redaction(local.start(), m.end(), "email", "regex", "<EMAIL>"))
    n = len(text)
    for rx, hint, seps in ((IPV4, _IPV4_HINT, "."), (IPV6, _IPV6_HINT, ":.")):
        if not hint.search(text):
            continue
        for m in rx.finditer(text):
            before = text[m.start() - 1] if m.start() else " "
            after = text[m.end()] if m.end() < n else " "
            if before.isalnum() or before in "_" + seps or after.isalnum() or after in "_" + seps:
                continue  # part of a longer token (a version 1.2.3.4.5, a hex run, an identifier)
            rep = _ip_replacement(text, m)
            if rep is not None:
                spans.append(Redaction(m.start(), m.end(), "ip_address", "regex", rep))
    low = text.lower()
    for m in PASSWORD.finditer(text) if any(w in low for w in _PASSWORD_WORDS) else ():
        value = m.group(2)
        if not _PLACEHOLDER.search(value) and len(set(value)) > 2:
            spans.append(Redaction(m.start(2), m.end(2), "password", "assignment", "<PASSWORD>"))
    if secrets:
        spans.extend(_secret_spans(text))
    spans.sort(key=lambda r: (r.start, -(r.end - r.start)))
    out: list[Redaction] = []
    end = -1
    for r in spans:
        if r.start >= end:
            out.append(r)
            end = r.end
    return out


def redact(text: str, spans: list[Redaction]) -> str:
    parts, pos = [], 0
    for r in spans:
        parts.append(text[pos: r.start])
        parts.append(r.replacement)
        pos = r.end
    parts.append(text[pos:])
    return "".join(parts)
