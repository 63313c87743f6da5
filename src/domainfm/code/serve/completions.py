"""`POST /v1/completions`: a request becomes sequences (prompt x n), the engine runs them, answers are built.

Prompts are encoded exactly as `domainfm code generate` encodes them (`Generator.tokenizer(text)`, FIM
prompts from `Generator.build_fim_prompt`, its end tokens), so a greedy answer equals its output.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from domainfm.code.serve.engine import Event, SamplingParams, Sequence
from domainfm.code.serve.protocol import APIError, CompletionRequest, check_supported

DEFAULT_MAX_TOKENS = 16  # OpenAI's default for the Completions API


@dataclass
class Prepared:
    """A validated request: per prompt its text (for echo) and ids; the sequences once created."""

    req: CompletionRequest
    texts: list[str]
    ids: list[list[int]]
    params: SamplingParams
    seqs: list[Sequence] = field(default_factory=list)


def prepare(req: CompletionRequest, gen: Any, context: int | None, max_tokens_limit: int) -> Prepared:
    """Validate against the model (ids, lengths) and encode; every failure is a 400 naming the field."""
    check_supported(req)
    tok = gen.tokenizer
    vocab = len(tok)
    prompts: list[Any]
    if isinstance(req.prompt, str):
        prompts = [req.prompt]
    elif req.prompt and isinstance(req.prompt[0], int):
        prompts = [req.prompt]  # one prompt given as token ids
    else:
        prompts = list(req.prompt)
    texts, ids = [], []
    for k, p in enumerate(prompts):
        if isinstance(p, list):
            if any(not 0 <= t < vocab for t in p):
                raise APIError(400, f"prompt {k} has token ids outside the vocabulary [0, {vocab})", "prompt")
            text, pid = tok.decode(p), list(p)
        else:
            text, pid = p, None
        if req.suffix is not None and pid is None:
            pid = gen.build_fim_prompt(text, req.suffix)  # PSM, as `domainfm code generate --prefix --suffix`
        elif req.suffix is not None:
            fim = gen.build_fim_prompt("", req.suffix)  # [pre, suf, *suffix, mid] around the given ids
            pid = [fim[0], *pid, *fim[1:]]
        elif pid is None:
            pid = tok(text).input_ids
        if not pid:  # an empty prompt starts from the document boundary, as OpenAI does
            pid = [tok.eos_token_id if tok.eos_token_id is not None else 0]
        texts.append(text)
        ids.append(pid)
    max_tokens = req.max_tokens
    if max_tokens is None:  # OpenAI's default, within the limit and the room the longest prompt leaves
        room = context - max(len(p) for p in ids) if context else DEFAULT_MAX_TOKENS
        max_tokens = max(1, min(DEFAULT_MAX_TOKENS, max_tokens_limit, room))
    if max_tokens > max_tokens_limit:
        raise APIError(400, f"max_tokens {max_tokens} is more than this server's limit of {max_tokens_limit}",
                       "max_tokens")
    if context:
        longest = max(len(p) for p in ids)
        if longest + max_tokens > context:
            raise APIError(400, f"the prompt has {longest} tokens and max_tokens is {max_tokens}: together more "
                                f"than the model's context of {context} tokens", "prompt")
    stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    params = SamplingParams(
        max_tokens=max_tokens, temperature=1.0 if req.temperature is None else req.temperature,
        top_p=1.0 if req.top_p is None else req.top_p, seed=req.seed, stop=[s for s in stop if s],
        end_ids=frozenset(gen._end_ids(fim=req.suffix is not None)), logprobs=req.logprobs)
    return Prepared(req, texts, ids, params)


def make_sequences(prep: Prepared, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue) -> list[Sequence]:
    """n sequences per prompt, choice index = prompt * n + k; choice k samples from seed + k."""
    n = prep.req.n or 1
    seqs = []
    for p, ids in enumerate(prep.ids):
        for k in range(n):
            idx = p * n + k
            seed = None if prep.params.seed is None else (prep.params.seed + k) % 2 ** 63
            params = SamplingParams(**{**prep.params.__dict__, "seed": seed})

            def emit(ev: Event, idx: int = idx) -> None:
                loop.call_soon_threadsafe(queue.put_nowait, (idx, ev))

            seqs.append(Sequence(ids, params, emit if prep.req.stream else _at_end(emit),
                                 prompt_logprobs=bool(prep.req.echo and prep.req.logprobs is not None),
                                 stream=bool(prep.req.stream)))
    prep.seqs = seqs
    return seqs


def _at_end(emit: Any) -> Any:
    """A non-streamed answer is built only once its choice ends: merge the engine's events into one, so the
    event loop wakes once per choice instead of once per generated token."""
    parts: list[Event] = []

    def buffered(ev: Event) -> None:
        parts.append(ev)
        if ev.finish_reason is not None:
            emit(Event(delta="".join(p.delta for p in parts), tokens=[t for p in parts for t in p.tokens],
                       finish_reason=ev.finish_reason, n_generated=ev.n_generated))

    return buffered


class ChoiceState:
    def __init__(self) -> None:
        self.text = ""
        self.tokens: list[dict[str, Any]] = []
        self.finish: str | None = None
        self.n_generated = 0


def _logprobs(tokens: list[dict[str, Any]], start: int, want_top: bool) -> dict[str, Any]:
    offs, pos = [], start
    for t in tokens:
        offs.append(pos)
        pos += len(t["text"])
    return {"tokens": [t["text"] for t in tokens], "token_logprobs": [t["logprob"] for t in tokens],
            "top_logprobs": [t.get("top") for t in tokens] if want_top else None, "text_offset": offs}


def _echo_tokens(prep: Prepared, seq: Sequence) -> list[dict[str, Any]]:
    return list(seq.prompt_scores)  # the first prompt token has no logprob (nothing before it)


def build_response(prep: Prepared, states: list[ChoiceState], model: str, rid: str, created: int
                   ) -> dict[str, Any]:
    req, n = prep.req, prep.req.n or 1
    choices = []
    for idx, st in enumerate(states):
        prompt_text = prep.texts[idx // n] if req.echo else ""
        lp = None
        if req.logprobs is not None:
            toks = st.tokens
            if req.echo:
                toks = _echo_tokens(prep, prep.seqs[idx]) + toks
            lp = _logprobs(toks, 0, req.logprobs > 0)
        choices.append({"index": idx, "text": prompt_text + st.text, "logprobs": lp,
                        "finish_reason": st.finish})
    return {"id": rid, "object": "text_completion", "created": created, "model": model, "choices": choices,
            "usage": usage(prep, states)}


def usage(prep: Prepared, states: list[ChoiceState]) -> dict[str, int]:
    prompt = sum(len(p) for p in prep.ids)
    completion = sum(s.n_generated for s in states)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def new_id() -> tuple[str, int]:
    return f"cmpl-{uuid.uuid4().hex}", int(time.time())


def apply_event(st: ChoiceState, ev: Event) -> None:
    st.text += ev.delta
    st.tokens += ev.tokens
    if ev.finish_reason is not None:
        st.finish = ev.finish_reason
        st.n_generated = ev.n_generated


async def stream_events(prep: Prepared, queue: asyncio.Queue, model: str, rid: str, created: int
                        ) -> AsyncIterator[str]:
    """Server-sent events: one chunk per new text piece, a last chunk per choice with its finish_reason,
    a usage chunk when `stream_options.include_usage`, then ``data: [DONE]``."""
    req, n = prep.req, prep.req.n or 1
    states = [ChoiceState() for _ in prep.seqs]
    done = 0
    offsets = [0] * len(states)

    def chunk(idx: int, text: str, tokens: list[dict[str, Any]], finish: str | None) -> str:
        lp = None
        if req.logprobs is not None and tokens:
            lp = _logprobs(tokens, offsets[idx], req.logprobs > 0)
        offsets[idx] += len(text)
        body = {"id": rid, "object": "text_completion", "created": created, "model": model,
                "choices": [{"index": idx, "text": text, "logprobs": lp, "finish_reason": finish}]}
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    if req.echo:
        for idx, seq in enumerate(prep.seqs):
            toks = _echo_tokens(prep, seq) if req.logprobs is not None else []
            yield chunk(idx, prep.texts[idx // n], toks, None)
    while done < len(states):
        idx, ev = await queue.get()
        st = states[idx]
        apply_event(st, ev)
        if ev.finish_reason in ("error", "cancelled"):
            raise RuntimeError(f"generation failed: {ev.delta}")
        if ev.finish_reason is not None:
            done += 1
        if ev.delta or ev.tokens or ev.finish_reason is not None:
            yield chunk(idx, ev.delta, ev.tokens, ev.finish_reason)
    if req.stream_options is not None and req.stream_options.include_usage:
        body = {"id": rid, "object": "text_completion", "created": created, "model": model, "choices": [],
                "usage": usage(prep, states)}
        yield f"data: {json.dumps(body)}\n\n"
    yield "data: [DONE]\n\n"
