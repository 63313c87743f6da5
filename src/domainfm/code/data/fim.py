"""Repository-context samples and fill-in-the-middle (FIM), at the text level (no tokenizer needed).

A sample is a list of *pieces*: `Special("<file_sep>")` markers (one token each) and plain text.
Text and markers stay apart until tokenisation, so source code that happens to contain the string
"<file_sep>" never turns into a control token.

Repository sample (StarCoder2): the files of one repository in a seeded random order; with probability
`meta_rate` (0.5) the sample carries metadata::

    <repo_name>NAME<file_sep>PATH\nCODE<file_sep>PATH\nCODE...<|endoftext|>

otherwise ``<file_sep>CODE<file_sep>CODE...<|endoftext|>``.

Packing applies FIM per training row on token ids (`fim_rows.py`, as Megatron-LM did for StarCoder2);
this module holds the text-level pieces of it: split points drawn uniformly at character level (0..len,
twice, sorted; so prefix, middle or suffix may be empty), then with probability `spm_rate` SPM else
PSM. The layouts are those of bigcode's Megatron-LM (`megatron/data/gpt_dataset.py: permute`), which
trained StarCoder / StarCoder2:

    PSM: <fim_prefix>PREFIX<fim_suffix>SUFFIX<fim_middle>MIDDLE
    SPM: <fim_prefix><fim_suffix>SUFFIX<fim_middle>PREFIX MIDDLE     ("variant 2" of Bavarian et al. 2022)

In SPM the prefix follows `<fim_middle>` directly and the middle continues it, so at inference the
same model infills from ``<fim_prefix><fim_suffix>S<fim_middle>P`` by plain continuation. In a
sample with metadata the file's `PATH\n` heads the prefix (StarCoder2 paper, section 5.2:
``<file_sep><fim_prefix>PATH\nCODE_PRE<fim_suffix>...``); split points fall in the code only.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass

from domainfm.code.tokenizer.special import (
    EOS,
    FILE_SEP,
    FIM_MIDDLE,
    FIM_PAD,
    FIM_PREFIX,
    FIM_SUFFIX,
    REPO_NAME,
    STARCODER2_SPECIAL_TOKENS,
)


@dataclass(frozen=True)
class Special:
    """One special token in a sample (rendered as its string, tokenised as its single id)."""

    token: str


Piece = Special | str


def seeded_rng(seed: int, key: str) -> random.Random:
    """An RNG derived from (seed, key) alone: a repository's sample does not depend on which shard,
    worker or position it lands in, so the output is the same for any `--workers`."""
    digest = hashlib.sha256(f"{seed}\x00{key}".encode("utf-8", "surrogatepass")).digest()
    return random.Random(int.from_bytes(digest[:8], "little"))


def fim_split(code: str, rng: random.Random) -> tuple[str, str, str]:
    """Two uniform character positions in [0, len] -> (prefix, middle, suffix)."""
    a, b = sorted((rng.randint(0, len(code)), rng.randint(0, len(code))))
    return code[:a], code[a:b], code[b:]


def fim_pieces(prefix: str, middle: str, suffix: str, spm: bool) -> list[Piece]:
    """The FIM layout of one file. In SPM, prefix and middle stay two pieces (tokenised separately, as
    Megatron's `permute` does): the model then sees the same token boundary at the split point as in an
    SPM prompt at inference, which ends with the prefix's own tokens."""
    if spm:
        return [Special(FIM_PREFIX), Special(FIM_SUFFIX), suffix, Special(FIM_MIDDLE), prefix, middle]
    return [Special(FIM_PREFIX), prefix, Special(FIM_SUFFIX), suffix, Special(FIM_MIDDLE), middle]


def apply_fim(code: str, rng: random.Random, fim_rate: float = 0.5, spm_rate: float = 0.5) -> tuple[list[Piece], str]:
    """FIM-transform one file with probability `fim_rate`; returns (pieces, mode in {"", "psm", "spm"})."""
    if rng.random() >= fim_rate:
        return [code], ""
    prefix, middle, suffix = fim_split(code, rng)
    spm = rng.random() < spm_rate
    return fim_pieces(prefix, middle, suffix, spm), "spm" if spm else "psm"


def _normalise(pieces: list[Piece]) -> list[Piece]:
    """Merge adjacent text and drop empty text (what a decode of the token ids gives back)."""
    out: list[Piece] = []
    for p in pieces:
        if isinstance(p, str):
            if not p:
                continue
            if out and isinstance(out[-1], str):
                out[-1] += p
                continue
        out.append(p)
    return out


def undo_fim(pieces: list[Piece]) -> str:
    """Inverse of `apply_fim`: drop the FIM tokens and reorder.

    With A = text between <fim_prefix> and <fim_suffix>, B = between <fim_suffix> and <fim_middle>,
    C = after <fim_middle>, the original is A + C + B for both layouts (in SPM, A is empty and C is
    prefix + middle), so no layout flag is needed, and empty parts are harmless.
    """
    pieces = _normalise(pieces)
    if Special(FIM_PREFIX) not in pieces:
        return "".join(p for p in pieces if isinstance(p, str))
    i, j, k = (pieces.index(Special(t)) for t in (FIM_PREFIX, FIM_SUFFIX, FIM_MIDDLE))
    if not i < j < k:
        raise ValueError("FIM tokens out of order")

    def text(a: int, b: int) -> str:
        return "".join(p for p in pieces[a:b] if isinstance(p, str))

    return text(i + 1, j) + text(k + 1, len(pieces)) + text(j + 1, k)


@dataclass
class SampleStats:
    files: int = 0
    psm: int = 0
    spm: int = 0
    with_meta: int = 0


def repo_sample(repo_name: str, files: list[tuple[str, str]] | list[tuple[str, str, str]], seed: int,
                fim_rate: float = 0.0, spm_rate: float = 0.5, meta_rate: float = 0.5,
                stats: SampleStats | None = None, key: str | None = None,
                tags: list[str] | None = None) -> list[Piece]:
    """The sample of one repository; `files` = [(path, code)] or [(path, code, source)] in any order.

    `pack` builds samples with `fim_rate=0` and applies FIM per training row afterwards
    (`fim_rows`, as Megatron / StarCoder2); `fim_rate > 0` gives the per-file text-level variant.
    `key` seeds the file order and the draws (default: the repository name; a data mixture's extra copy
    of a repository uses its own key). When `tags` is given, one source name per returned piece is
    appended to it (a file's pieces get its source; `<repo_name>`, the name and `<|endoftext|>` get the
    source of the sample's first file), so tokens can be counted per source."""
    rng = seeded_rng(seed, repo_name if key is None else key)
    order = sorted(files, key=lambda f: (f[0], f[1]))  # canonical first, so the corpus order does not matter
    rng.shuffle(order)
    meta = rng.random() < meta_rate
    out: list[Piece] = [Special(REPO_NAME), repo_name] if meta else []
    sources = [f[2] if len(f) > 2 else "" for f in order]
    if tags is not None:
        tags.extend([sources[0] if sources else ""] * len(out))
    for (path, code, *_), source in zip(order, sources, strict=True):
        out.append(Special(FILE_SEP))
        pieces, mode = apply_fim(code, rng, fim_rate, spm_rate)
        if meta:  # the path heads the file, and in a FIM file the prefix (after <fim_middle> in SPM)
            at = {"": 0, "psm": 1, "spm": 4}[mode]
            pieces[at] = path + "\n" + pieces[at]
        out.extend(pieces)
        if tags is not None:
            tags.extend([source] * (1 + len(pieces)))
        if stats is not None:
            stats.files += 1
            stats.psm += mode == "psm"
            stats.spm += mode == "spm"
    out.append(Special(EOS))
    if tags is not None:
        tags.append(sources[0] if sources else "")
    if stats is not None:
        stats.with_meta += meta
    return out


# curated record kinds that StarCoder2 trains as documents of their own, in formats written with its
# special tokens (curate/notebooks.py, curate/github.py), rather than as files of a repository sample
FORMAT_KINDS = ("notebook_structured", "issue", "pull_request")
# the tokens those formats use (Jupyter, issue, PR and <repo_name>); EOS, FIM and <file_sep> stay text there
FORMAT_TOKENS = [t for t in STARCODER2_SPECIAL_TOKENS
                 if t not in (EOS, FIM_PREFIX, FIM_MIDDLE, FIM_SUFFIX, FIM_PAD, FILE_SEP)]
_FORMAT_RE = re.compile("(" + "|".join(re.escape(t) for t in FORMAT_TOKENS) + ")")


def format_sample(text: str) -> list[Piece]:
    """A structured notebook / issue / pull request as one sample: its format tokens become single
    special tokens (as in StarCoder2's data), the rest stays text; ends with `<|endoftext|>`."""
    parts = _FORMAT_RE.split(text)  # odd indices: the tokens
    out: list[Piece] = [Special(p) if i % 2 else p for i, p in enumerate(parts)]
    return [p for p in out if p != ""] + [Special(EOS)]


def render(pieces: list[Piece]) -> str:
    """The sample as one string (special tokens written out): for reading and for tests."""
    return "".join(p.token if isinstance(p, Special) else p for p in pieces)


def parse_sample(pieces: list[Piece]) -> tuple[str | None, list[tuple[str | None, str]]]:
    """Inverse of `repo_sample` (FIM undone): (repo_name or None, [(path or None, code)]) in sample order.

    Accepts the pieces as built or as recovered from token ids (adjacent text merged)."""
    pieces = _normalise(pieces)
    if pieces and pieces[-1] == Special(EOS):
        pieces = pieces[:-1]
    repo = None
    i = 0
    if pieces and pieces[0] == Special(REPO_NAME):
        if len(pieces) > 1 and isinstance(pieces[1], str):
            repo, i = pieces[1], 2
        else:
            repo, i = "", 1
    files: list[tuple[str | None, str]] = []
    while i < len(pieces):
        if pieces[i] != Special(FILE_SEP):
            raise ValueError(f"expected {FILE_SEP} at piece {i}, got {pieces[i]!r}")
        j = i + 1
        while j < len(pieces) and pieces[j] != Special(FILE_SEP):
            j += 1
        text = undo_fim(list(pieces[i + 1:j]))
        path = None
        if repo is not None:
            path, _, text = text.partition("\n")
        files.append((path, text))
        i = j
    return repo, files
