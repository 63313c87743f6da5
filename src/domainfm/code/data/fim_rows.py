"""Fill-in-the-middle per training row, on token ids, as Megatron-LM trained StarCoder / StarCoder2.

`pack` first cuts the plain token stream (repository samples, no FIM) into rows of `seq_len` tokens,
then transforms every row here, the way `GPTFIMDataset._query_document_sample_shuffle_indices` /
`_fim_split_and_permute_sequence` / `_permute` do (NVIDIA/Megatron-LM
`megatron/training/datasets/fim_dataset.py`, from bigcode-project/Megatron-LM `gpt_dataset.py`):

1. the row is split at `<|endoftext|>` into segments (the EOS tokens stay where they are);
2. a segment without `<file_sep>` is FIM-transformed whole with probability `fim_rate`; a segment with
   `<file_sep>` is, with probability `fim_rate`, split at `<file_sep>` into fragments (one file each,
   Megatron's `--fim-split-sample`), and each fragment is transformed with probability
   `fragment_rate` (Megatron's `fim_fragment_rate`);
3. a transform decodes the fragment's ids to text, draws two character positions uniformly in
   [0, len] (sorted), and encodes prefix, middle and suffix *separately* (also in SPM, so the token
   boundary at the split point is the one a FIM prompt has at inference):

       PSM: <fim_prefix> PREFIX <fim_suffix> SUFFIX <fim_middle> MIDDLE
       SPM: <fim_prefix> <fim_suffix> SUFFIX <fim_middle> PREFIX MIDDLE

4. the row is cut back to `seq_len` tokens (a transform adds 3 sentinels and may re-tokenise a few
   tokens differently) or padded with `<fim_pad>` (masked from the loss by the trainer).

Where we are stricter than Megatron, for the same reason each time (no row may hold a FIM part without
the others, and no fragment may be corrupted):
- when the cut at `seq_len` would fall before a fragment's `<fim_middle>`, that fragment stays plain
  (Megatron cuts it, leaving `<fim_prefix>...<fim_suffix>...` without a middle); cutting inside the
  middle text keeps all three sentinels and is kept, as in Megatron;
- fragments holding a structure token (`<repo_name>`, a FIM token, any StarCoder2 special token other
  than the PII placeholders) stay plain: decoding and re-encoding would turn the token into text
  (Megatron's `fim_no_prefix` does this for a fragment starting with the repository name);
- fragments whose bytes are not whole UTF-8 characters (the row boundary cut a character) stay plain;
  re-encoding the decoded replacement character would change the data;
- empty fragments stay empty (Megatron would emit three sentinels around nothing after a final EOS).

Repository level (StarCoder2, arXiv:2402.19173 section 5.2): in a sample with metadata each file is
``<file_sep>PATH\\nCODE``; its FIM form keeps the path at the head of the prefix, split points are
drawn in CODE only (so the path is never cut), as the paper writes it::

    <repo_name>NAME<file_sep><fim_prefix>PATH\\nCODE_PRE<fim_suffix>CODE_SUF<fim_middle>CODE_MID<file_sep>...

Randomness comes from `seeded_rng(seed, key)` per row: the output does not depend on workers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from domainfm.code.data.fim import seeded_rng


@dataclass(frozen=True)
class FimTokenIds:
    prefix: int
    middle: int
    suffix: int
    pad: int
    eos: int
    file_sep: int
    blocked: frozenset[int] = field(default_factory=frozenset)  # a fragment holding one stays plain


@dataclass
class FimRowStats:
    psm: int = 0  # fragments transformed (and whole in the row), by layout
    spm: int = 0
    kept_plain: int = 0  # chosen for FIM but kept plain (structure token, cut character, cut before middle)
    truncated_tokens: int = 0  # tokens cut off at seq_len (Megatron's "too long" case)
    pad_tokens: int = 0  # <fim_pad> added (the "too short" case and the shard's last row)

    def add(self, other: FimRowStats) -> None:
        for k in vars(self):
            setattr(self, k, getattr(self, k) + getattr(other, k))


@dataclass
class _Frag:
    """One fragment of a row: ids[start:end]; `fim` is None (plain) or "psm" / "spm"."""

    start: int
    end: int
    has_path: bool
    fim: str | None = None
    text: str = ""
    parts: tuple[str, str, str] = ("", "", "")  # (prefix incl. path, middle, suffix)


def _fragments(ids: np.ndarray, path_sep: np.ndarray, t: FimTokenIds, rng: Any, fim_rate: float,
               fragment_rate: float) -> list[_Frag | int]:
    """The row as a list of fragments and separator token ids, with the FIM decisions drawn.

    ids: (n,) token ids of the row (no padding); path_sep: (n,) bool, True on a `<file_sep>` that is
    followed by `PATH\\n` (samples with metadata)."""
    out: list[_Frag | int] = []
    eos_at = np.flatnonzero(ids == t.eos).tolist()
    start = 0
    for stop in [*eos_at, len(ids)]:
        seg = ids[start:stop]
        seps = (np.flatnonzero(seg == t.file_sep) + start).tolist()
        if not seps:  # no file separator: the whole segment is one fragment at fim_rate
            out.append(_Frag(start, stop, False, _draw(rng, fim_rate)))
        else:
            split = rng.random() < fim_rate
            bounds = [start - 1, *seps, stop]
            for k in range(len(bounds) - 1):
                a, b = bounds[k] + 1, bounds[k + 1]
                if k > 0:
                    out.append(t.file_sep)
                has_path = k > 0 and bool(path_sep[bounds[k]])
                out.append(_Frag(a, b, has_path, _draw(rng, fragment_rate) if split else None))
        if stop < len(ids):
            out.append(t.eos)
        start = stop + 1
    return out


def _draw(rng: Any, rate: float) -> str | None:
    return "fim" if rng.random() < rate else None


def fim_rows(tok: Any, rows: list[np.ndarray], path_sep: list[np.ndarray], t: FimTokenIds, seq_len: int,
             seed: int, key: str, fim_rate: float, fragment_rate: float, spm_rate: float
             ) -> tuple[np.ndarray, FimRowStats]:
    """FIM-transform `rows` (each (n_i,) ids, n_i <= seq_len) -> ((len(rows), seq_len) ids, stats).

    `tok` is a `tokenizers.Tokenizer` (decode_batch / encode_batch do the text work of all rows in
    two calls); row r draws from `seeded_rng(seed, f"{key}:{r}")`."""
    stats = FimRowStats()
    plans: list[list[_Frag | int]] = []
    rngs = []
    todo: list[_Frag] = []
    for r, ids in enumerate(rows):
        rng = seeded_rng(seed, f"{key}:{r}")
        frags = _fragments(ids, path_sep[r], t, rng, fim_rate, fragment_rate) if fim_rate > 0 else []
        for f in frags:
            if isinstance(f, _Frag) and f.fim:
                if f.end <= f.start or np.isin(ids[f.start:f.end], list(t.blocked)).any():
                    f.fim = None  # nothing to infill, or a structure token that text would not give back
                    stats.kept_plain += f.end > f.start
                else:
                    todo.append(f)
        plans.append(frags)
        rngs.append(rng)
    # decode all chosen fragments in one call
    texts = tok.decode_batch([rows[r][f.start:f.end].tolist() for r, fr in enumerate(plans)
                              for f in fr if isinstance(f, _Frag) and f.fim], skip_special_tokens=False)
    it = iter(texts)
    enc_in: list[str] = []
    for r, frags in enumerate(plans):
        rng = rngs[r]
        for f in frags:
            if not (isinstance(f, _Frag) and f.fim):
                continue
            text = next(it)
            head = ""
            if f.has_path:
                path, nl, code = text.partition("\n")
                head, text = path + nl, code
            if "\ufffd" in text or "\ufffd" in head or (f.has_path and not head.endswith("\n")):
                # a character cut at the row boundary (re-encoding the replacement character would
                # change the bytes), or the row ends inside the path: keep plain
                f.fim = None
                stats.kept_plain += 1
                continue
            a, b = sorted((rng.randint(0, len(text)), rng.randint(0, len(text))))
            f.fim = "spm" if rng.random() < spm_rate else "psm"
            f.parts = (head + text[:a], text[a:b], text[b:])
            enc_in.extend(f.parts)
    encs = iter(tok.encode_batch(enc_in, add_special_tokens=False) if enc_in else [])
    out = np.full((len(rows), seq_len), t.pad, dtype=np.int64)
    for r, frags in enumerate(plans):
        ids = rows[r]
        if not frags:  # no FIM at all
            out[r, :len(ids)] = ids
            stats.pad_tokens += seq_len - len(ids)
            continue
        # (output ids, plain ids or None, index of <fim_middle> in output, layout)
        pieces: list[tuple[np.ndarray, np.ndarray | None, int, str]] = []
        for f in frags:
            if isinstance(f, int):
                pieces.append((np.asarray([f], dtype=np.int64), None, -1, ""))
                continue
            plain = ids[f.start:f.end]
            if not f.fim:
                pieces.append((plain, None, -1, ""))
                continue
            pre, mid, suf = (np.asarray(next(encs).ids, dtype=np.int64) for _ in range(3))
            if f.fim == "psm":
                seq = np.concatenate([[t.prefix], pre, [t.suffix], suf, [t.middle], mid])
                at = 2 + len(pre) + len(suf)
            else:
                seq = np.concatenate([[t.prefix, t.suffix], suf, [t.middle], pre, mid])
                at = 2 + len(suf)
            pieces.append((seq, plain, at, f.fim))
        out[r] = _fit(pieces, seq_len, t.pad, stats)
    return out, stats


def _fit(pieces: list[tuple[np.ndarray, np.ndarray | None, int, str]], seq_len: int, pad: int,
         stats: FimRowStats) -> np.ndarray:
    """Concatenate, then cut to `seq_len` (never before a fragment's `<fim_middle>`) or pad: (seq_len,)."""
    changed = True
    while changed:
        changed, pos = False, 0
        for k, (seq, plain, at, _) in enumerate(pieces):
            if pos >= seq_len:
                break
            if plain is not None and pos + at >= seq_len:
                pieces[k] = (plain, None, -1, "")  # the cut would split the FIM frame: keep it plain
                stats.kept_plain += 1
                changed = True
                break
            pos += len(seq)
    pos = 0
    for seq, plain, _, mode in pieces:
        if plain is not None and pos < seq_len:
            stats.spm += mode == "spm"
            stats.psm += mode == "psm"
        pos += len(seq)
    row = np.concatenate([p[0] for p in pieces]) if pieces else np.zeros(0, dtype=np.int64)
    stats.truncated_tokens += max(0, len(row) - seq_len)
    n_pad = max(0, seq_len - len(row))
    stats.pad_tokens += n_pad
    return np.concatenate([row[:seq_len], np.full(n_pad, pad, dtype=np.int64)])
