"""The OpenAI legacy Completions request/response shapes (as the official `openai` client sends them) and
OpenAI's error JSON: ``{"error": {"message", "type", "param", "code"}}``.

Field names, defaults and ranges follow the OpenAI API reference for `POST /v1/completions`: `max_tokens`
defaults to 16, `temperature` to 1 (0..2), `top_p` to 1, `n` to 1 (1..128), `logprobs` 0..5, `stop` up to 4
strings. Unknown fields are rejected with 400, as OpenAI does ("Unrecognized request argument supplied").
Options that exist in the API but that this server does not implement (`best_of` > `n`, penalties,
`logit_bias`) are rejected by name rather than silently ignored.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

StopString = Annotated[str, StringConstraints(max_length=256)]


class APIError(Exception):
    """An error answered in OpenAI's shape."""

    def __init__(self, status: int, message: str, param: str | None = None, type_: str = "invalid_request_error",
                 code: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.type, self.code = status, message, param, type_, code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool | None = None


class CompletionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, max_length=512, description="the served model's id (optional: there is one)")
    prompt: str | list[str] | list[int] | list[list[int]] = Field(
        description="text, texts, token ids or lists of token ids")
    suffix: str | None = Field(None, description="text after the hole: the request becomes fill-in-the-middle")
    max_tokens: int | None = Field(None, ge=0, description="default 16, capped at the server's limit and the "
                                                           "room the prompt leaves in the context")
    temperature: float | None = Field(1.0, ge=0, le=2)
    top_p: float | None = Field(1.0, gt=0, le=1)
    n: int | None = Field(1, ge=1, le=128)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    logprobs: int | None = Field(None, ge=0, le=5)
    echo: bool | None = False
    stop: StopString | list[StopString] | None = Field(None, max_length=4)
    seed: int | None = Field(None, ge=-(2 ** 63), le=2 ** 63 - 1)
    user: str | None = None
    best_of: int | None = Field(None, ge=1, le=128)
    # accepted by the OpenAI API, not implemented here: only their neutral values are valid
    presence_penalty: float | None = Field(0.0, ge=0, le=0, description="only 0 (penalties are not supported)")
    frequency_penalty: float | None = Field(0.0, ge=0, le=0, description="only 0 (penalties are not supported)")
    logit_bias: dict[str, float] | None = Field(None, max_length=0, description="not supported: empty or null")
    # domainfm extension (StarCoder's attribution tracing): needs a server started with --trace-index
    trace: bool | None = Field(False, description="attach the training-data trace of each completion")
    trace_top_k: int | None = Field(3, ge=1, le=50, description="training files per trace")


class TraceRequest(BaseModel):
    """POST /v1/trace: the same answer as `domainfm code trace INDEX SNIPPET --json`."""

    model_config = ConfigDict(extra="forbid")

    snippet: str = Field(max_length=1_000_000, description="the code to trace")
    top_k: int = Field(5, ge=1, le=50, description="training files to return")


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "domainfm"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class Logprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None] | None = None
    text_offset: list[int]


class Choice(BaseModel):
    index: int
    text: str
    logprobs: Logprobs | None = None
    finish_reason: Literal["stop", "length"] | None = None


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage | None = None


def check_supported(req: CompletionRequest) -> None:
    """400 for options that are valid OpenAI but not served here, and for combinations that make no sense."""
    n = req.n or 1
    if req.best_of is not None and req.best_of != n:
        raise APIError(400, f"best_of={req.best_of} is not supported (only best_of == n)", "best_of")
    if req.presence_penalty or req.frequency_penalty:
        param = "presence_penalty" if req.presence_penalty else "frequency_penalty"
        raise APIError(400, f"{param} is not supported (only 0)", param)
    if req.logit_bias:
        raise APIError(400, "logit_bias is not supported", "logit_bias")
    stops = [req.stop] if isinstance(req.stop, str) else (req.stop or [])
    if len(stops) > 4:
        raise APIError(400, f"stop has {len(stops)} strings; at most 4 are allowed", "stop")
    if any(len(s) > 256 for s in stops):
        raise APIError(400, "each stop string must be at most 256 characters", "stop")
    if isinstance(req.prompt, list) and not req.prompt:
        raise APIError(400, "prompt is an empty list", "prompt")
    if req.suffix is not None and req.echo:
        raise APIError(400, "echo cannot be combined with suffix (fill-in-the-middle returns only the middle)",
                       "echo")
    if req.stream and (n > 1 and req.best_of not in (None, n)):
        raise APIError(400, "best_of cannot be streamed", "best_of")


def validation_message(errors: list[dict[str, Any]]) -> tuple[str, str | None]:
    """One readable line from pydantic's errors: which field and why."""
    if not errors:
        return "invalid request", None
    e = errors[0]
    loc = [str(x) for x in e.get("loc", ()) if x != "body"]
    # for unions pydantic appends the member type tried ("str", "list[int]", "constrained-str"): keep the
    # field path (field names and list indices) only
    names = set(CompletionRequest.model_fields) | set(StreamOptions.model_fields) | set(TraceRequest.model_fields)
    field = ".".join(x for x in loc if x in names or x.isdigit())
    kind = e.get("type", "")
    if kind == "extra_forbidden":
        field = loc[-1] if loc else ""
        return f"Unrecognized request argument supplied: {field}", field or None
    if kind == "missing":
        return f"'{field}' is a required property", field or None
    if kind == "json_invalid":
        return f"the body is not valid JSON ({e.get('msg', '')})", None
    if not field:
        return f"invalid request body: {e.get('msg', 'invalid')}", None
    return f"invalid value for '{field}': {e.get('msg', 'invalid')}", field
