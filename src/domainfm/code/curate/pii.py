"""PII redaction, the StarCoder way: emails, public IP addresses, secrets/keys, passwords.

- emails -> ``<EMAIL>``; public IPv4/IPv6 -> one of a few fixed private addresses of the same
  family, chosen by a hash of the value (the same value always gets the same replacement); private,
  loopback, reserved, link-local, multicast and well-known DNS resolvers are kept, and version strings
  (``version 1.2.3.4``, ``v1.2.3.4``, all-single-digit quads) are not IPs;
- secrets -> ``<KEY>``: detect-secrets plugins (AWS, GitHub, Slack, Stripe, JWT, private keys,
  high-entropy base64/hex strings...) with filters against hashes, UUIDs, ids, templated and
  sequential strings; private-key blocks are redacted whole;
- passwords -> ``<PASSWORD>``: detect-secrets' KeywordDetector (its per-file-type regexes for
  `*password*`, `*secret*`, `*pwd*`, `db_pass`... in Python, YAML, Java, JS, shell) plus the names it
  misses (`SMTP_PASS`, annotated `password: str = "..."`, unquoted `.env`/shell `MYSQL_PWD=...`);
  look-alikes stay: empty strings, placeholders (`changeme`, `<password>`, `xxx`), references
  (`${DB_PASSWORD}`, `%(pw)s`, `{{ vault }}`), type hints and calls;
- names (optional, `--pii-model DIR`): a local token-classification model (StarPII-style labels
  such as NAME, USERNAME, EMAIL, KEY, PASSWORD) loaded with transformers -> ``<NAME>`` etc.
Each redaction is reported as ``(start, end, type, detector, replacement)`` on the original text;
the secret itself is never stored.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import PurePosixPath
from typing import Protocol

# each pattern starts with a literal or a narrow class (fast scanning); boundaries are checked after
EMAIL_DOMAIN = re.compile(r"@(?:[A-Za-z0-9-]{1,63}\.)+[A-Za-z]{2,24}(?![\w-])")
EMAIL_LOCAL = re.compile(r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}$")
IPV4 = re.compile(r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}")
IPV6 = re.compile(r"[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{0,4}){2,7}")
_PASSWORD_WORDS = ("pass", "pwd", "secret", "api_key", "apikey")
_PW_LINE = re.compile(r"(?im)^.*(?:pass|pwd|secret|api_?key|contrase).*$")
# cheap gates: patterns that start with a literal are scanned by re's fast literal search
_IPV4_HINT = re.compile(r"\.\d{1,3}\.\d{1,3}\.")
_IPV6_HINT = re.compile(r":[0-9A-Fa-f]{0,4}:")
PRIVATE_KEY = re.compile(r"-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY( BLOCK)?-----(.*?)-----END \1PRIVATE KEY\2?-----",
                         re.DOTALL)
# a password-like name (`password`, `db_pwd`, `SMTP_PASS`, `app_secret`, `passphrase`) then an
# optional type annotation (`: str`), an assignment and a quoted value
_PW_NAME = r"[A-Za-z0-9_.-]*(?:passw(?:or)?d|passphrase|pwd|_pass|secret(?:_?key)?|api_?key)"
PASSWORD = re.compile(r"(?i)(?<![A-Za-z0-9])" + _PW_NAME + r"\b[\"']?\s*(?::\s*[A-Za-z_][\w\[\], .]*)?"
                      r"(?:=|:|:=|=>)\s*[rbuf]?([\"'])([^\"'\n]{4,128})\1")
# unquoted `NAME=value` at a line start, for env/shell/ini-like files only (in code it is an expression)
PASSWORD_ENV = re.compile(r"(?im)^[ \t]*(?:export[ \t]+)?" + _PW_NAME + r"[A-Za-z0-9_]*[ \t]*=[ \t]*([^\s\"'#;]{4,128})")
_ENV_FILES = re.compile(r"(?i)(?:^|/)(?:\.env[^/]*|[^/]*\.(?:env|sh|bash|zsh|ini|cfg|conf|properties|envrc)|"
                        r"Dockerfile[^/]*|[^/.]+)$")
# a version number before the quad: `version 1.2.3.4`, `__version__ = "1.2.3.4"`, `v1.2.3.4`; the word
# must start there (`srv = "93.184.216.34"` is a server address, not a version)
_VERSION_BEFORE = re.compile(r"(?i)(?<![A-Za-z])(?:version|ver|release|rev|v)_*\s*[:=]?\s*[\"']?$")
# a line can hold a secret only with a long token, a quoted hex run, a key header or URL credentials
# a line can hold a secret only with a 20+ char token (every detector's key format is at least that
# long), a quoted hex run, a key header or credentials in a URL
_CANDIDATE_LINE = re.compile(r"[A-Za-z0-9+/=_\-]{20,}|[\"'][0-9a-fA-F]{8,}[\"']|PRIVATE KEY|://[^\s:@/]+:[^\s@/]+@")
_HASH_LIKE = re.compile(r"^[0-9a-fA-F]+$")
_PLACEHOLDER = re.compile(  # templates/references, prose or regexes (a space, `(`, `|`), env names
    r"[{}$<>%*\s()|\\]|^[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+$|^\.\.\.$|^(x+|\*+|changeme|change_me|changeit|password\d*|passwd|secret|example|test|dummy|none|"
    r"null|nil|true|false|placeholder|redacted|your[_-]?\w*|my[_-]?\w*|\w*[_-]?here|todo|tbd|fixme|required|"
    r"optional|string|str|env|default|admin|root|guest|pass|pwd|foo|bar|foobar|blank|empty)$", re.IGNORECASE)
# an unquoted value that is code or a reference, not a literal: `get_pw()`, `os.environ[...]`, `self.pw`
_CODE_VALUE = re.compile(r"[()\[\]{}$%]|^[A-Za-z_]\w*\.[A-Za-z_]")

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


class NerDetector(Protocol):
    def __call__(self, text: str) -> list[Redaction]: ...


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


def _is_placeholder(value: str) -> bool:
    v = value.strip()
    return len(v) < 4 or len(set(v)) <= 2 or bool(_PLACEHOLDER.search(v))


@lru_cache(maxsize=1)
def _keyword_detector():
    from detect_secrets.plugins.keyword import KeywordDetector

    return KeywordDetector()


def _password_spans(text: str, path: str) -> list[Redaction]:
    """Secrets assigned to password-like names: detect-secrets' KeywordDetector on each line that
    names one (it knows each file type's assignment syntax), then our patterns for what it misses."""
    low = text.lower()
    if not any(w in low for w in _PASSWORD_WORDS):
        return []
    out: list[Redaction] = []
    kd = _keyword_detector()
    fname = PurePosixPath(path).name or "file.txt"
    for m in _PW_LINE.finditer(text):
        begin = text.rfind("\n", 0, m.start()) + 1
        end = text.find("\n", m.start())
        line = text[begin: len(text) if end < 0 else end]
        if line.strip() == "pass":
            continue  # Python's no-op statement
        for found in kd.analyze_line(filename=fname, line=line, line_number=0):
            value = found.secret_value or ""
            if _is_placeholder(value):
                continue
            k = line.find(value)
            if k >= 0:
                out.append(Redaction(begin + k, begin + k + len(value), "password", "KeywordDetector", "<PASSWORD>"))
    for m in PASSWORD.finditer(text):
        if not _is_placeholder(m.group(2)):
            out.append(Redaction(m.start(2), m.end(2), "password", "assignment", "<PASSWORD>"))
    if _ENV_FILES.search(path or "x.env"):
        for m in PASSWORD_ENV.finditer(text):
            if not _is_placeholder(m.group(1)) and not _CODE_VALUE.search(m.group(1)):
                out.append(Redaction(m.start(1), m.end(1), "password", "env_assignment", "<PASSWORD>"))
    return out


def find_pii(text: str, secrets: bool = True, path: str = "", ner: NerDetector | None = None) -> list[Redaction]:
    """Non-overlapping redactions sorted by start (earlier/longer spans win overlaps). `path` picks
    detect-secrets' keyword regexes for the file type; `ner` adds a token-classification model's spans."""
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
            if after == "." and (m.end() + 1 >= n or not text[m.end() + 1].isalnum()):
                after = " "  # a full stop ending the sentence, not a fifth quad
            if before.isalnum() or before in "_" + seps or after.isalnum() or after in "_" + seps:
                continue  # part of a longer token (a version 1.2.3.4.5, a hex run, an identifier)
            rep = _ip_replacement(text, m)
            if rep is not None:
                spans.append(Redaction(m.start(), m.end(), "ip_address", "regex", rep))
    spans.extend(_password_spans(text, path))
    if secrets:
        spans.extend(_secret_spans(text))
    if ner is not None:
        spans.extend(ner(text))
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
