"""The FastAPI application: routes, OpenAI-shaped errors, body-size limit, loading / draining states.

The model loads in a background thread after the app starts, so `/health` and every route answer 503 (with
`Retry-After`) while it loads instead of refusing connections; `draining` (set on SIGTERM by the CLI) makes
new completion requests 503 while the running ones finish.
"""

from __future__ import annotations

import asyncio
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from domainfm.code.serve.completions import (
    ChoiceState,
    apply_event,
    build_response,
    make_sequences,
    new_id,
    prepare,
    stream_events,
)
from domainfm.code.serve.engine import Engine
from domainfm.code.serve.metrics import Metrics
from domainfm.code.serve.protocol import (
    APIError,
    CompletionRequest,
    ErrorResponse,
    ModelList,
    TraceRequest,
    validation_message,
)
from domainfm.core.progress import get_logger

log = get_logger("serve")


@dataclass
class ServeConfig:
    model_dir: Path
    host: str = "127.0.0.1"
    port: int = 8000
    device: str = "auto"
    dtype: str = "auto"  # auto = bf16 on CUDA, fp32 on CPU (as `domainfm code generate`)
    max_batch: int = 32  # sequences decoded together
    max_queue: int = 256  # sequences waiting for a slot before 429
    max_tokens_limit: int | None = None  # None = the model's context
    max_body_bytes: int = 4 * 1024 * 1024
    model_name: str | None = None  # default: the model folder's name
    shutdown_timeout: float = 30.0
    trace_index: Path | None = None  # a `code index` folder: enables POST /v1/trace and `"trace": true`


class ServerState:
    """Everything the routes share; built by `create_app`, filled by the loader thread."""

    def __init__(self, cfg: ServeConfig) -> None:
        self.cfg = cfg
        self.metrics = Metrics()
        self.model_name = cfg.model_name or Path(cfg.model_dir).resolve().name
        self.gen: Any = None
        self.engine: Engine | None = None
        self.context: int | None = None
        self.ready = threading.Event()
        self.load_error: str | None = None
        self.draining = False
        self.created = int(time.time())
        self.tracer: Any = None

    def load(self) -> None:
        """Load model + tokenizer through `domainfm.code.generate.Generator` and start the engine."""
        try:
            from domainfm.code.generate import Generator

            gen = Generator(self.cfg.model_dir, device=self.cfg.device,
                            dtype=None if self.cfg.dtype == "auto" else self.cfg.dtype)
            model = gen.model  # loads (device "auto" resolved there)
            c = model.config
            self.context = getattr(c, "max_position_embeddings", None) or getattr(c, "n_positions", None)
            if self.cfg.trace_index is not None:  # open the attribution index before taking requests
                from domainfm.code.attribution.trace import Tracer

                self.tracer = Tracer(Path(self.cfg.trace_index))
            engine = Engine(model, gen.tokenizer, gen.device, max_batch=self.cfg.max_batch, metrics=self.metrics)
            engine.start()
            self.gen, self.engine = gen, engine
            self.ready.set()
        except Exception as exc:  # reported on /health and by the CLI
            self.load_error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            log.error("loading %s failed: %s", self.cfg.model_dir, self.load_error)

    @property
    def tokens_limit(self) -> int:
        limit = self.cfg.max_tokens_limit or self.context or 2048
        return min(limit, self.context) if self.context else limit


def _rss_mb() -> float | None:
    """This process's resident memory (Linux /proc), for leak checks; None elsewhere."""
    import os

    try:
        with open("/proc/self/statm") as f:
            return round(int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20, 1)
    except (OSError, ValueError, IndexError):
        return None


def _error(exc: APIError) -> Any:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


class BodyLimit:
    """ASGI middleware: 413 in OpenAI's shape for a body over `limit` bytes (declared or streamed)."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._too_large(scope, receive, send)
        body, more = [], True
        while more:  # buffer the body (bounded by the limit), then replay it to the app
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            body.append(msg.get("body", b""))
            more = msg.get("more_body", False)
            if sum(map(len, body)) > self.limit:
                return await self._too_large(scope, receive, send)
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, scope: dict, receive: Any, send: Any) -> None:
        resp = _error(APIError(413, f"the request body is larger than {self.limit} bytes", None))
        await resp(scope, receive, send)


def create_app(cfg: ServeConfig, load_in_background: bool = True) -> Any:
    state = ServerState(cfg)

    @asynccontextmanager
    async def lifespan(app: Any):  # noqa: ANN202
        if load_in_background:
            threading.Thread(target=state.load, name="domainfm-serve-load", daemon=True).start()
        else:
            state.load()
        yield
        state.draining = True
        if state.engine is not None:
            state.engine.stop()

    app = FastAPI(title="domainfm code serve", version="1", lifespan=lifespan,
                  description="OpenAI-compatible legacy Completions (with fill-in-the-middle `suffix`)")
    app.state.serve = state
    app.add_middleware(BodyLimit, limit=cfg.max_body_bytes)
    errors: dict[int | str, dict[str, Any]] = {
        code: {"model": ErrorResponse} for code in (400, 404, 413, 429, 503)}

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> Any:
        return _error(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Any:
        message, param = validation_message(list(exc.errors()))
        return _error(APIError(400, message, param))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Any:
        kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
        return JSONResponse({"error": {"message": str(exc.detail), "type": kind, "param": None, "code": None}},
                            status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> Any:  # a server bug, never client input
        log.exception("unhandled error")
        return JSONResponse({"error": {"message": "internal error", "type": "server_error", "param": None,
                                       "code": None}}, status_code=500)

    def require_ready() -> None:
        if state.load_error:
            raise APIError(503, f"the model failed to load: {state.load_error}", type_="server_error")
        if not state.ready.is_set():
            raise APIError(503, "the model is loading", type_="server_error", headers={"Retry-After": "5"})
        if state.draining:
            raise APIError(503, "the server is shutting down", type_="server_error", headers={"Retry-After": "5"})

    @app.get("/health", responses={503: {"model": ErrorResponse}})
    async def health() -> dict[str, Any]:
        require_ready()
        eng = state.engine
        assert eng is not None
        return {"status": "ok", "model": state.model_name, "queue_depth": eng.queue_depth,
                "running": eng.running, "cache_width": eng.cache_width, "peak_running": eng.peak_running,
                "rss_mb": _rss_mb()}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> Any:
        data, ctype = state.metrics.render()
        return PlainTextResponse(data.decode(), media_type=ctype)

    @app.get("/v1/models", response_model=ModelList)
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": state.model_name, "object": "model", "created": state.created,
                                            "owned_by": "domainfm"}]}

    def require_tracer() -> Any:
        require_ready()
        if state.tracer is None:
            raise APIError(404, "this server has no training-data index (start it with --trace-index INDEX)",
                           None, code="trace_not_enabled")
        return state.tracer

    @app.post("/v1/trace", responses=errors)
    async def trace(body: TraceRequest) -> Any:
        """The `domainfm code trace INDEX SNIPPET --json` answer for `snippet`."""
        tracer = require_tracer()
        return await asyncio.to_thread(tracer.trace, body.snippet, body.top_k)

    @app.post("/v1/completions", responses=errors)
    async def completions(body: CompletionRequest, request: Request) -> Any:
        t0 = time.monotonic()
        try:
            resp = await _complete(body, request, t0)
        except APIError as exc:
            state.metrics.requests.labels(str(exc.status)).inc()
            raise
        state.metrics.requests.labels("200").inc()
        return resp

    async def _complete(body: CompletionRequest, request: Request, t0: float) -> Any:
        require_ready()
        if body.model is not None and body.model not in (state.model_name, str(cfg.model_dir)):
            raise APIError(404, f"The model '{body.model}' does not exist (this server serves "
                                f"'{state.model_name}')", "model", code="model_not_found")
        eng = state.engine
        assert eng is not None
        if body.trace:
            require_tracer()
            if body.stream:
                raise APIError(400, "trace is not available with stream=true (call POST /v1/trace on the "
                                    "streamed text)", "trace")
        # tokenising a large prompt is CPU work: off the event loop
        prep = await asyncio.to_thread(prepare, body, state.gen, state.context, state.tokens_limit)
        n_seqs = len(prep.ids) * (body.n or 1)
        if n_seqs > cfg.max_queue:
            raise APIError(400, f"the request asks for {n_seqs} completions (prompts x n); this server queues at "
                                f"most {cfg.max_queue}", "n")
        if eng.queue_depth + n_seqs > cfg.max_queue:
            raise APIError(429, "the server's queue is full; retry later", type_="rate_limit_error",
                           headers={"Retry-After": "1"})
        state.metrics.prompt_tokens.inc(sum(len(p) for p in prep.ids))
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        seqs = make_sequences(prep, loop, queue)
        rid, created = new_id()
        if prep.params.max_tokens == 0:  # nothing to generate (e.g. echo-only)
            states = [ChoiceState() for _ in seqs]
            for st in states:
                st.finish = "length"
            return build_response(prep, states, state.model_name, rid, created)
        eng.submit(seqs)
        if body.stream:
            async def events() -> Any:
                try:
                    async for piece in stream_events(prep, queue, state.model_name, rid, created):
                        yield piece
                finally:  # also on client disconnect: free the batch slots now
                    eng.cancel([s for s in seqs if not s.finished])
                    state.metrics.latency.observe(time.monotonic() - t0)

            return StreamingResponse(events(), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        states = [ChoiceState() for _ in seqs]
        pending = len(seqs)
        try:
            while pending:
                try:
                    idx, ev = await asyncio.wait_for(queue.get(), timeout=0.25)
                except TimeoutError:
                    if await request.is_disconnected():
                        raise APIError(499, "client disconnected") from None
                    continue
                apply_event(states[idx], ev)
                if ev.finish_reason in ("error", "cancelled"):
                    raise RuntimeError(f"generation failed ({ev.finish_reason}): {ev.delta}")
                if ev.finish_reason is not None:
                    pending -= 1
        finally:
            eng.cancel([s for s in seqs if not s.finished])
        state.metrics.latency.observe(time.monotonic() - t0)
        resp = build_response(prep, states, state.model_name, rid, created)
        if body.trace:  # opt-in: the trace of each generated completion (not of the echoed prompt)
            tracer = state.tracer
            for choice, st in zip(resp["choices"], states, strict=True):
                choice["trace"] = await asyncio.to_thread(tracer.trace, st.text, body.trace_top_k or 3)
        return resp

    return app
