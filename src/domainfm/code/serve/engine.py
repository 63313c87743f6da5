"""The continuous-batching engine: one scheduler thread, one left-padded KV cache, requests join and leave.

Why our own scheduler and not transformers' `ContinuousBatchingManager` (5.x, `generate_batch`): that engine
runs our StarCoder2 models correctly on CPU (greedy output equal to `generate`, checked by hand, see
docs/serve.md), but it samples every request of a batch from one shared RNG, so a request's `seed` would not
make its sampling reproducible (its draws depend on its batch mates), and on CPU it sizes a paged cache from
free memory at start (30 s for a 2-layer toy model here). This scheduler is small and keeps the numerics of
transformers `generate` (its model forward and cache; up to fp32 GEMM-shape effects, docs/serve.md "Numerics"):

* **prefill in length groups**: the prompts waiting at a step boundary (within a token budget) are sorted by
  length and prefilled in groups, one forward per group, each group left-padded to its longest prompt (at most
  25% padding): every row has position ids 0..n-1 over its real tokens and a 2-D mask hiding its padding, and
  the LM head runs on the last position only (as `generate`). A group of one is exactly `generate`'s prefill
  (batch 1, no padding), so a lone request's first token is bit-identical to `domainfm code generate`; in a
  larger group the row's logits equal its lone prefill to ~1e-5 (fp32 GEMMs of another shape; see
  docs/serve.md, "Numerics"). On a CPU one G-row forward costs less than G forwards of one (larger GEMMs);
* **decode together**: all running sequences advance one token per step in one forward call over a shared
  `DynamicCache` whose rows are left-padded to the longest; each row has its own position id (its true
  length) and a 2-D attention mask that hides its padding, so no row sees another's tokens or padding;
* **join / leave between steps**: a finished, cancelled or disconnected sequence's row is dropped at the
  next step boundary (and all-padding columns trimmed), a new one is left-padded in;
* **per-sequence sampling**: temperature / top-p with transformers' own warpers, drawn from the sequence's
  own `torch.Generator` seeded from the request's `seed` (+ choice index), so batch mates never matter.

Tensor shapes: batch cache K/V per layer (B, H_kv, W, D); `mask` (B, W) 1 = real token; `lens` (B,) real
lengths; step input ids (B, 1); logits (B, V); a prefill group: ids / mask / positions (G, L), K/V (G, H_kv, L, D).
"""

from __future__ import annotations

import collections
import inspect
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from domainfm.code.generate import apply_stop
from domainfm.core.progress import get_logger

log = get_logger("serve")

PAD_WASTE = 1.25  # a prefill group's padded tokens may exceed its real tokens by 25% at most


@dataclass
class SamplingParams:
    max_tokens: int = 16
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    end_ids: frozenset[int] = frozenset()
    logprobs: int | None = None  # top alternatives per generated token (None = no logprobs)


@dataclass
class Event:
    """What the engine reports for a sequence: new text (`delta`), or the end (`finish_reason` set)."""

    delta: str = ""
    tokens: list[dict[str, Any]] = field(default_factory=list)  # per new token: id, text, logprob, top
    finish_reason: str | None = None  # "stop" | "length" | "cancelled" | "error"
    n_generated: int = 0


class Sequence:
    """One choice of one prompt: prompt ids in, tokens out; `emit(Event)` is called from the engine thread."""

    def __init__(self, prompt_ids: list[int], params: SamplingParams, emit: Callable[[Event], None],
                 prompt_logprobs: bool = False, stream: bool = True) -> None:
        self.prompt_ids = prompt_ids
        self.params = params
        self.emit = emit
        self.prompt_logprobs = prompt_logprobs
        self.stream = stream  # False: text only at the end (no per-token decode unless a stop string needs it)
        self.prompt_scores: list[dict[str, Any]] = []  # filled at prefill when prompt_logprobs
        self.out_ids: list[int] = []
        self.sent = ""  # text already emitted
        self.cancelled = False
        self.finished = False
        self.generator: Any = None


class Engine:
    """`submit(seqs)` from any thread; a daemon thread runs prefill + batched decode steps until `stop()`."""

    def __init__(self, model: Any, tokenizer: Any, device: str, max_batch: int = 32,
                 prefill_token_budget: int = 4096, prefill_group_tokens: int = 2048, metrics: Any = None) -> None:
        import torch

        self.torch = torch
        self.model, self.tok, self.device = model, tokenizer, device
        self.max_batch = max_batch
        self.prefill_token_budget = prefill_token_budget
        self.prefill_group_tokens = prefill_group_tokens  # padded tokens in one prefill forward at most
        self.metrics = metrics
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        # as `generate` decides: the LM head on the last prompt position only, when the model can
        params = inspect.signature(model.forward).parameters
        self.keep_logits = "logits_to_keep" in params
        # transformers >= 5.x names the KV cache argument `cache` (`past_key_values` before)
        self.cache_arg = "cache" if "cache" in params else "past_key_values"
        self._waiting: collections.deque[Sequence] = collections.deque()
        self._running: list[Sequence] = []
        self._admitting: list[Sequence] = []  # taken from the queue, not yet in the batch
        self._cond = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None
        self.peak_running = 0  # the largest batch decoded so far (tests check that requests were batched)
        self.prefill_forwards = 0  # prefill forward calls so far, and the most prompts one of them held
        self.peak_prefill_group = 0
        # the batch state (engine thread only)
        self._cache: Any = None
        self._mask: Any = None  # (B, W) long
        self._lens: Any = None  # (B,) long
        self._next: Any = None  # (B,) the token each row feeds next

    # ---- public, thread-safe -------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="domainfm-serve-engine", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Cancel everything still queued or running and end the thread."""
        with self._cond:
            self._stop = True
            for s in [*self._waiting, *self._running]:
                s.cancelled = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def submit(self, seqs: list[Sequence]) -> None:
        with self._cond:
            self._waiting.extend(seqs)
            self._cond.notify_all()
        self._gauges()

    def cancel(self, seqs: list[Sequence]) -> None:
        """Mark sequences cancelled; their rows are freed before the next decode step."""
        with self._cond:
            for s in seqs:
                s.cancelled = True
            self._cond.notify_all()

    @property
    def queue_depth(self) -> int:
        return len(self._waiting)

    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def cache_width(self) -> int:
        return 0 if self._mask is None else int(self._mask.shape[1])

    # ---- the loop ------------------------------------------------------------------------------
    def _loop(self) -> None:
        torch = self.torch
        with torch.inference_mode():
            while True:
                with self._cond:
                    while not self._stop and not self._waiting and not self._running:
                        self._cond.wait(0.5)
                    if self._stop and not self._waiting and not self._running:
                        break
                try:
                    self._drop_done()
                    self._admit()
                    self._drop_done()  # a sequence can end on its first token
                    if self._running:
                        self._decode_step()
                    self._drop_done()
                except Exception as exc:  # a bug must not hang clients: fail the running sequences
                    log.exception("engine step failed")
                    for s in [*self._running, *self._admitting]:
                        if not s.finished:
                            self._finish(s, "error", str(exc))
                    self._admitting = []
                    self._running, self._cache, self._mask, self._lens, self._next = [], None, None, None, None
                self._gauges()

    def _gauges(self) -> None:
        if self.metrics is not None:
            self.metrics.queue_depth.set(len(self._waiting))
            self.metrics.running.set(len(self._running))

    def _admit(self) -> None:
        """Take waiting sequences (within the step's prefill token budget), prefill them in length groups
        (one forward per group) and add them to the batch."""
        budget = self.prefill_token_budget
        admitted: list[Sequence] = []
        while len(self._running) + len(admitted) < self.max_batch:
            with self._cond:
                if not self._waiting:
                    break
                seq = self._waiting[0]
                if not seq.cancelled and budget < len(seq.prompt_ids) and budget < self.prefill_token_budget:
                    break  # this step's prefill budget is spent: let the batch decode first
                self._waiting.popleft()
            if seq.cancelled:
                self._finish(seq, "cancelled")
                continue
            budget -= len(seq.prompt_ids)
            admitted.append(seq)
        if not admitted:
            return
        self._admitting = admitted  # failed on the loop's error path if a prefill raises
        # n > 1: one prefill per distinct prompt (rows are copied out of it); prompt logprobs need every
        # position's logits, so such a sequence is prefilled on its own
        users: dict[Any, list[Sequence]] = {}
        for seq in admitted:
            key: Any = id(seq) if seq.prompt_logprobs else tuple(seq.prompt_ids)
            users.setdefault(key, []).append(seq)
        for group in self._groups(list(users.values())):
            cache, mask, logits = self._prefill([u[0] for u in group])
            rows = [i for i, u in enumerate(group) for _ in u]  # group row of every admitted sequence
            seqs = [s for u in group for s in u]
            base = len(self._running)
            self._join(seqs, cache, mask, rows)
            for j, (seq, r) in enumerate(zip(seqs, rows, strict=True)):
                self._take(seq, logits[r], row=base + j)
        self._admitting = []

    def _groups(self, users: list[list[Sequence]]) -> list[list[list[Sequence]]]:
        """Distinct prompts in prefill groups: similar lengths together (sorted), a group closed when left
        padding would exceed `PAD_WASTE` of its real tokens or it would hold more than `prefill_group_tokens`
        padded tokens. A prompt with `prompt_logprobs` is a group of its own."""
        alone = [[u] for u in users if u[0].prompt_logprobs]
        rest = sorted((u for u in users if not u[0].prompt_logprobs), key=lambda u: len(u[0].prompt_ids))
        groups: list[list[list[Sequence]]] = []
        cur: list[list[Sequence]] = []
        real = 0
        for u in rest:
            n = len(u[0].prompt_ids)  # the longest so far (sorted)
            padded = n * (len(cur) + 1)
            if cur and (padded > PAD_WASTE * (real + n) or padded > self.prefill_group_tokens):
                groups.append(cur)
                cur, real = [], 0
            cur.append(u)
            real += n
        if cur:
            groups.append(cur)
        return alone + groups

    def _prefill(self, seqs: list[Sequence]) -> tuple[Any, Any, Any]:
        """Prefill G prompts in one forward, left-padded to the longest: (DynamicCache with (G, H, L, D) rows,
        (G, L) mask, (G, V) fp32 logits of each prompt's last token).

        Each row gets position ids 0..n-1 over its real tokens and a 2-D mask hiding its padding, so a row sees
        exactly what it would see alone; a group of one is `generate`'s own prefill (batch 1, no padding)."""
        torch = self.torch
        from transformers import DynamicCache

        width = max(len(s.prompt_ids) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long, device=self.device)  # (G, L)
        mask = torch.zeros(len(seqs), width, dtype=torch.long, device=self.device)  # (G, L) 1 = real
        for i, s in enumerate(seqs):
            n = len(s.prompt_ids)
            ids[i, width - n:] = torch.tensor(s.prompt_ids, device=self.device)
            mask[i, width - n:] = 1
        pos = (mask.cumsum(-1) - 1).clamp(min=0)  # (G, L): 0..n-1 on the real tokens
        logprobs = seqs[0].prompt_logprobs  # only ever in a group of one (see `_groups`)
        kwargs: dict[str, Any] = {}
        if self.keep_logits and not logprobs:
            kwargs["logits_to_keep"] = 1  # what `generate` passes: the LM head on the last position only
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True,
                         **{self.cache_arg: DynamicCache()}, **kwargs)
        self.prefill_forwards += 1
        self.peak_prefill_group = max(self.peak_prefill_group, len(seqs))
        logits = out.logits[:, -1, :].float()  # (G, V): the last position is real in every row
        cache = self._out_cache(out)
        if len(seqs) > 1:
            keep = mask.bool()[:, None, :, None]  # (G, 1, L, 1)
            for layer in self._layers(cache):  # padding columns: zeros (never attended; no stray NaN)
                layer.keys = torch.where(keep, layer.keys, 0)
                layer.values = torch.where(keep, layer.values, 0)
        if logprobs:
            seq = seqs[0]
            lp = torch.log_softmax(out.logits[0, :-1].float(), -1)  # (L-1, V): scores of tokens 1..L-1
            first = {"id": seq.prompt_ids[0], "text": self.tok.decode(seq.prompt_ids[:1]), "logprob": None,
                     "top": None}
            seq.prompt_scores = [first] + [self._token_info(seq.prompt_ids[i + 1], lp[i], seq.params.logprobs or 0)
                                           for i in range(lp.shape[0])]
        return cache, mask, logits

    @staticmethod
    def _out_cache(out: Any) -> Any:
        cache = getattr(out, "cache", None)
        return cache if cache is not None else out.past_key_values

    # ---- batch cache surgery (between steps only) ----------------------------------------------
    def _layers(self, cache: Any) -> list[Any]:
        return list(cache.layers)

    def _join(self, seqs: list[Sequence], cache: Any, mask: Any, rows: list[int]) -> None:
        """Append `seqs` to the batch: row `rows[j]` of a prefilled group (cache (G, H, L, D), mask (G, L)),
        the group and the batch left-padded to a common width W (a row can be taken twice: n > 1)."""
        torch = self.torch
        idx = torch.tensor(rows, device=self.device)
        mask = mask.index_select(0, idx)  # (k, L)
        lens = mask.sum(-1)  # (k,) real lengths
        new_layers = [(layer.keys.index_select(0, idx), layer.values.index_select(0, idx))
                      for layer in self._layers(cache)]  # copies: a shared prefill is never appended to twice
        nxt = torch.full((len(seqs),), self.pad_id, dtype=torch.long, device=self.device)
        if self._cache is None:
            from transformers import DynamicCache

            self._cache = DynamicCache()
            for k, v in new_layers:
                self._cache.update(k, v, len(self._cache.layers))
            self._mask, self._lens, self._next = mask, lens, nxt
            self._running.extend(seqs)
            return
        w, n = self._mask.shape[1], mask.shape[1]
        grow = max(0, n - w)  # pad the whole batch on the left when the newcomers are longer
        pad_new = max(0, w - n)
        for big, (k, v) in zip(self._layers(self._cache), new_layers, strict=True):
            for name, t in (("keys", k), ("values", v)):
                b = getattr(big, name)  # (B, H, W, D), t: (k, H, n, D)
                if grow:
                    b = torch.nn.functional.pad(b, (0, 0, grow, 0))
                if pad_new:
                    t = torch.nn.functional.pad(t, (0, 0, pad_new, 0))
                setattr(big, name, torch.cat([b, t], 0))
        old = torch.nn.functional.pad(self._mask, (grow, 0)) if grow else self._mask
        mask = torch.nn.functional.pad(mask, (pad_new, 0)) if pad_new else mask
        self._mask = torch.cat([old, mask], 0)
        self._lens = torch.cat([self._lens, lens])
        self._next = torch.cat([self._next, nxt])
        self._running.extend(seqs)

    def _drop_done(self) -> None:
        """Remove finished / cancelled rows and trim columns that are padding in every remaining row."""
        torch = self.torch
        for s in self._running:
            if s.cancelled and not s.finished:
                self._finish(s, "cancelled")
        keep = [i for i, s in enumerate(self._running) if not s.finished]
        if len(keep) == len(self._running):
            return
        if not keep:
            self._running, self._cache, self._mask, self._lens, self._next = [], None, None, None, None
            return
        idx = torch.tensor(keep, device=self.device)
        self._running = [self._running[i] for i in keep]
        self._mask, self._lens, self._next = self._mask[idx], self._lens[idx], self._next[idx]
        cut = int(self._mask.shape[1] - self._lens.max())  # leading columns no remaining row uses
        for layer in self._layers(self._cache):
            layer.keys = layer.keys.index_select(0, idx)[:, :, cut:]
            layer.values = layer.values.index_select(0, idx)[:, :, cut:]
        self._mask = self._mask[:, cut:]

    # ---- one decode step -----------------------------------------------------------------------
    def _decode_step(self) -> None:
        torch = self.torch
        self.peak_running = max(self.peak_running, len(self._running))
        ids = self._next[:, None]  # (B, 1)
        mask = torch.cat([self._mask, torch.ones_like(ids)], 1)  # (B, W + 1)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=self._lens[:, None],
                         use_cache=True, **{self.cache_arg: self._cache})
        self._cache, self._mask, self._lens = self._out_cache(out), mask, self._lens + 1
        logits = out.logits[:, -1, :].float()  # (B, V)
        for i, seq in enumerate(self._running):
            if not seq.finished and not seq.cancelled:
                self._take(seq, logits[i], row=i)

    def _pick(self, seq: Sequence, logits: Any) -> int:
        """Greedy argmax, or a draw from temperature / top-p (transformers' warpers) with the sequence's RNG."""
        torch = self.torch
        p = seq.params
        if p.temperature == 0:
            return int(torch.argmax(logits))
        from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper

        scores = TemperatureLogitsWarper(p.temperature)(None, logits[None])
        if p.top_p < 1.0:
            scores = TopPLogitsWarper(p.top_p)(None, scores)
        if seq.generator is None:
            seq.generator = torch.Generator(device=logits.device)
            if p.seed is None:
                seq.generator.seed()
            else:
                seq.generator.manual_seed(p.seed)
        probs = torch.softmax(scores, -1)  # (1, V)
        return int(torch.multinomial(probs, 1, generator=seq.generator))

    def _token_info(self, tid: int, logprobs: Any, k: int) -> dict[str, Any]:
        info: dict[str, Any] = {"id": tid, "text": self.tok.decode([tid]), "logprob": float(logprobs[tid])}
        if k:
            top = self.torch.topk(logprobs, k)
            info["top"] = {self.tok.decode([int(j)]): float(v) for v, j in zip(top.values, top.indices, strict=True)}
        return info

    def _take(self, seq: Sequence, logits: Any, row: int) -> None:
        """Append the next token of `seq` (logits: (V,) fp32), emit new text, finish on end/stop/length."""
        p = seq.params
        tid = self._pick(seq, logits)
        seq.out_ids.append(tid)
        if self.metrics is not None:
            self.metrics.generated_tokens.inc()
        info = None
        if p.logprobs is not None:
            info = self._token_info(tid, self.torch.log_softmax(logits, -1), p.logprobs)
        if tid in p.end_ids:  # the end token ends the text and is not part of it (as `generate` cuts it)
            self._finish(seq, "stop", tokens=[])
            return
        self._next[row] = tid
        if not seq.stream and not p.stop:  # nothing to stream, no stop string to look for: no decode now
            if len(seq.out_ids) >= p.max_tokens:
                self._finish(seq, "length", tokens=[info] if info else [])
            elif info:
                seq.emit(Event(tokens=[info]))
            return
        text = self.tok.decode(seq.out_ids, skip_special_tokens=False)
        if p.stop and any(s and s in text for s in p.stop):
            self._finish(seq, "stop", tokens=[info] if info else [])
            return
        if len(seq.out_ids) >= p.max_tokens:
            self._finish(seq, "length", tokens=[info] if info else [])
            return
        safe = _safe_prefix(text, p.stop)
        if len(safe) > len(seq.sent) or info:
            delta = safe[len(seq.sent):]
            seq.sent = safe
            seq.emit(Event(delta=delta, tokens=[info] if info else []))

    def _finish(self, seq: Sequence, reason: str, message: str = "", tokens: list[dict[str, Any]] | None = None
                ) -> None:
        seq.finished = True
        if reason in ("stop", "length"):
            ids = [t for t in seq.out_ids if t not in seq.params.end_ids]
            text = apply_stop(self.tok.decode(ids, skip_special_tokens=False), seq.params.stop)
            delta = text[len(seq.sent):] if text.startswith(seq.sent) else text
            seq.sent = text
        else:
            delta = message
        seq.emit(Event(delta=delta, tokens=tokens or [], finish_reason=reason, n_generated=len(seq.out_ids)))


def _safe_prefix(text: str, stop: list[str]) -> str:
    """The part of `text` that can be streamed now: before a stop string, without a trailing partial
    UTF-8 character (decoded as U+FFFD) or a tail that could still grow into a stop string."""
    text = apply_stop(text, stop)
    end = len(text)
    while end and text[end - 1] == "\ufffd":
        end -= 1
    hold = 0
    for s in stop:
        for k in range(min(len(s) - 1, end), 0, -1):
            if text[end - k:end] == s[:k]:
                hold = max(hold, k)
                break
    return text[:end - hold]


def now() -> float:
    return time.monotonic()
