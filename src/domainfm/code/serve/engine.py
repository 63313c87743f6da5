"""The continuous-batching engine: one scheduler thread, one left-padded KV cache, requests join and leave.

Why our own scheduler and not transformers' `ContinuousBatchingManager` (5.x, `generate_batch`): that engine
runs our StarCoder2 models correctly on CPU (greedy output equal to `generate`, checked by hand, see
docs/serve.md), but it samples every request of a batch from one shared RNG, so a request's `seed` would not
make its sampling reproducible (its draws depend on its batch mates), and on CPU it sizes a paged cache from
free memory at start (30 s for a 2-layer toy model here). This scheduler is small and keeps the exact
numerics of transformers `generate`:

* **prefill alone**: a new sequence's prompt runs through the model by itself (batch 1, no padding, position
  ids 0..L-1, logits of the last position only), exactly as `generate` runs it, so its first token is
  bit-identical to `domainfm code generate`;
* **decode together**: all running sequences advance one token per step in one forward call over a shared
  `DynamicCache` whose rows are left-padded to the longest; each row has its own position id (its true
  length) and a 2-D attention mask that hides its padding, so no row sees another's tokens or padding;
* **join / leave between steps**: a finished, cancelled or disconnected sequence's row is dropped at the
  next step boundary (and all-padding columns trimmed), a new one is left-padded in;
* **per-sequence sampling**: temperature / top-p with transformers' own warpers, drawn from the sequence's
  own `torch.Generator` seeded from the request's `seed` (+ choice index), so batch mates never matter.

Tensor shapes: batch cache K/V per layer (B, H_kv, W, D); `mask` (B, W) 1 = real token; `lens` (B,) real
lengths; step input ids (B, 1); logits (B, V).
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
                 prompt_logprobs: bool = False) -> None:
        self.prompt_ids = prompt_ids
        self.params = params
        self.emit = emit
        self.prompt_logprobs = prompt_logprobs
        self.prompt_scores: list[dict[str, Any]] = []  # filled at prefill when prompt_logprobs
        self.out_ids: list[int] = []
        self.sent = ""  # text already emitted
        self.cancelled = False
        self.finished = False
        self.generator: Any = None


class Engine:
    """`submit(seqs)` from any thread; a daemon thread runs prefill + batched decode steps until `stop()`."""

    def __init__(self, model: Any, tokenizer: Any, device: str, max_batch: int = 32,
                 prefill_token_budget: int = 4096, metrics: Any = None) -> None:
        import torch

        self.torch = torch
        self.model, self.tok, self.device = model, tokenizer, device
        self.max_batch = max_batch
        self.prefill_token_budget = prefill_token_budget
        self.metrics = metrics
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        # as `generate` decides: the LM head on the last prompt position only, when the model can
        params = inspect.signature(model.forward).parameters
        self.keep_logits = "logits_to_keep" in params
        # transformers >= 5.x names the KV cache argument `cache` (`past_key_values` before)
        self.cache_arg = "cache" if "cache" in params else "past_key_values"
        self._waiting: collections.deque[Sequence] = collections.deque()
        self._running: list[Sequence] = []
        self._cond = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None
        self.peak_running = 0  # the largest batch decoded so far (tests check that requests were batched)
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
                    for s in [*self._running]:
                        self._finish(s, "error", str(exc))
                    self._running, self._cache, self._mask, self._lens, self._next = [], None, None, None, None
                self._gauges()

    def _gauges(self) -> None:
        if self.metrics is not None:
            self.metrics.queue_depth.set(len(self._waiting))
            self.metrics.running.set(len(self._running))

    def _admit(self) -> None:
        """Prefill waiting sequences (each alone, exactly as `generate` does) and add them to the batch."""
        budget = self.prefill_token_budget
        shared: dict[tuple[int, ...], tuple[Any, Any]] = {}  # n > 1: one prefill per distinct prompt
        while len(self._running) < self.max_batch:
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
            key = tuple(seq.prompt_ids)
            if key not in shared or seq.prompt_logprobs:
                shared[key] = self._prefill(seq)
            cache, logits = shared[key]
            self._join(seq, cache)
            self._take(seq, logits[0])

    def _prefill(self, seq: Sequence) -> tuple[Any, Any]:
        """(DynamicCache of the prompt, (1, V) fp32 logits of its last position)."""
        torch = self.torch
        from transformers import DynamicCache

        ids = torch.tensor([seq.prompt_ids], device=self.device)  # (1, L)
        kwargs: dict[str, Any] = {}
        if self.keep_logits and not seq.prompt_logprobs:
            kwargs["logits_to_keep"] = 1  # what `generate` passes: the LM head on the last position only
        out = self.model(input_ids=ids, attention_mask=torch.ones_like(ids),
                         position_ids=torch.arange(ids.shape[1], device=self.device)[None],
                         use_cache=True, **{self.cache_arg: DynamicCache()}, **kwargs)
        logits = out.logits[:, -1, :].float()  # (1, V)
        if seq.prompt_logprobs:
            lp = torch.log_softmax(out.logits[0, :-1].float(), -1)  # (L-1, V): scores of tokens 1..L-1
            first = {"id": seq.prompt_ids[0], "text": self.tok.decode(seq.prompt_ids[:1]), "logprob": None,
                     "top": None}
            seq.prompt_scores = [first] + [self._token_info(seq.prompt_ids[i + 1], lp[i], seq.params.logprobs or 0)
                                           for i in range(lp.shape[0])]
        return self._out_cache(out), logits

    @staticmethod
    def _out_cache(out: Any) -> Any:
        cache = getattr(out, "cache", None)
        return cache if cache is not None else out.past_key_values

    # ---- batch cache surgery (between steps only) ----------------------------------------------
    def _layers(self, cache: Any) -> list[Any]:
        return list(cache.layers)

    def _join(self, seq: Sequence, cache: Any) -> None:
        """Left-pad the new row (or the batch) to a common width W and append it to the batch."""
        torch = self.torch
        n = len(seq.prompt_ids)
        row_mask = torch.ones(1, n, dtype=torch.long, device=self.device)
        if self._cache is None:
            from transformers import DynamicCache

            self._cache = DynamicCache()
            for layer in self._layers(cache):  # copy: a shared prefill (n > 1) must not be appended to twice
                self._cache.update(layer.keys.clone(), layer.values.clone(), len(self._cache.layers))
            self._mask, self._lens = row_mask, torch.tensor([n], device=self.device)
            self._next = torch.full((1,), self.pad_id, dtype=torch.long, device=self.device)
            self._running.append(seq)
            return
        w = self._mask.shape[1]
        grow = max(0, n - w)  # pad the whole batch on the left when the newcomer is longer
        pad_new = max(0, w - n)
        for big, new in zip(self._layers(self._cache), self._layers(cache), strict=True):
            for name in ("keys", "values"):
                b, t = getattr(big, name), getattr(new, name)  # (B, H, W, D), (1, H, n, D)
                if grow:
                    b = torch.nn.functional.pad(b, (0, 0, grow, 0))
                if pad_new:
                    t = torch.nn.functional.pad(t, (0, 0, pad_new, 0))
                setattr(big, name, torch.cat([b, t], 0))
        mask = torch.nn.functional.pad(self._mask, (grow, 0)) if grow else self._mask
        row_mask = torch.nn.functional.pad(row_mask, (pad_new, 0)) if pad_new else row_mask
        self._mask = torch.cat([mask, row_mask], 0)
        self._lens = torch.cat([self._lens, torch.tensor([n], device=self.device)])
        self._next = torch.cat([self._next, torch.full((1,), self.pad_id, dtype=torch.long, device=self.device)])
        self._running.append(seq)

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

    def _take(self, seq: Sequence, logits: Any, row: int | None = None) -> None:
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
        row_i = len(self._running) - 1 if row is None else row
        self._next[row_i] = tid
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
