"""Where completions come from: a local model folder or an OpenAI-compatible completions endpoint.

Both backends answer `complete(prompts, params, stop)` and `infill(prefixes, suffixes, params, stop)` with
`n_samples` raw generations per prompt (the task's `postprocess` then cuts them). The local backend is the
project's generation layer (`domainfm.code.generate.Generator`: left padding, KV cache, seeded sampling).
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from typing import Any

from domainfm.core.errors import UserError
from domainfm.core.progress import get_logger

log = get_logger("code.evaluate.generation")

@dataclass
class GenParams:
    n_samples: int = 1
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 0.95
    max_new_tokens: int = 512
    seed: int = 0
    batch_size: int = 8
    stop: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class LocalBackend:
    """A local `AutoModelForCausalLM` folder (our own models included)."""

    def __init__(self, model_dir: str, device: str = "cpu") -> None:
        self.model_dir = model_dir
        self.device = device
        self._impl: Any = None

    @property
    def name(self) -> str:
        return str(self.model_dir)

    def _load(self) -> Any:
        if self._impl is None:
            if not os.path.isdir(self.model_dir):
                raise UserError(f"model folder not found: {self.model_dir}")
            # the project's generation layer: left padding, KV cache, stop strings, FIM tokens
            from domainfm.code.generate import GenerationConfig, Generator

            self._impl = _GeneratorAdapter(Generator(self.model_dir, device=self.device), GenerationConfig)
        return self._impl

    def complete(self, prompts: list[str], params: GenParams) -> list[list[str]]:
        return self._load().complete(prompts, params)

    def infill(self, prefixes: list[str], suffixes: list[str], params: GenParams) -> list[list[str]]:
        return self._load().infill(prefixes, suffixes, params)


class _GeneratorAdapter:
    def __init__(self, gen: Any, cfg_cls: Any) -> None:
        self.gen, self.cfg_cls = gen, cfg_cls

    def _cfg(self, p: GenParams) -> Any:
        return self.cfg_cls(max_new_tokens=p.max_new_tokens, temperature=p.temperature, top_p=p.top_p,
                            seed=p.seed, stop=list(p.stop), n_samples=p.n_samples, batch_size=p.batch_size)

    def complete(self, prompts: list[str], p: GenParams) -> list[list[str]]:
        return self.gen.complete(prompts, self._cfg(p))

    def infill(self, prefixes: list[str], suffixes: list[str], p: GenParams) -> list[list[str]]:
        return self.gen.infill(prefixes, suffixes, self._cfg(p))


class EndpointBackend:
    """An OpenAI-compatible `/v1/completions` server (vLLM, TGI, llama.cpp server, OpenAI...)."""

    def __init__(self, url: str, model: str | None = None, api_key: str | None = None,
                 timeout: float = 600.0, retries: int = 3) -> None:
        self.url = url
        self.model = model
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.timeout = timeout
        self.retries = retries

    @property
    def name(self) -> str:
        return f"{self.model or 'default'}@{self.url}"

    def completions_url(self) -> str:
        u = self.url.rstrip("/")
        if u.endswith("/completions"):
            return u
        return u + "/completions" if u.endswith("/v1") else u + "/v1/completions"

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        last = ""
        for attempt in range(self.retries):
            req = urllib.request.Request(self.completions_url(), data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    return json.loads(resp.read())
            except urllib.error.HTTPError as exc:
                detail = exc.read()[:300].decode(errors="replace")
                last = f"HTTP {exc.code}: {detail}"
                if exc.code < 500 and exc.code != 429:
                    break
            except (urllib.error.URLError, TimeoutError, ConnectionError, json.JSONDecodeError) as exc:
                last = str(getattr(exc, "reason", exc))
            time.sleep(min(2 ** attempt, 8) * 0.5)
        raise UserError(f"endpoint {self.completions_url()} failed: {last}")

    def _body(self, p: GenParams) -> dict[str, Any]:
        body: dict[str, Any] = {"max_tokens": p.max_new_tokens, "temperature": p.temperature, "top_p": p.top_p,
                                "n": p.n_samples, "seed": p.seed}
        if self.model:
            body["model"] = self.model
        if p.stop:
            body["stop"] = list(p.stop)[:4]  # the OpenAI API takes at most 4; the task cuts the rest
        return body

    def _choices(self, resp: dict[str, Any], n_prompts: int, n: int) -> list[list[str]]:
        choices = resp.get("choices")
        if not isinstance(choices, list) or len(choices) != n_prompts * n:
            raise UserError(f"endpoint returned {len(choices) if isinstance(choices, list) else 'no'} choices, "
                            f"expected {n_prompts * n}")
        choices = sorted(choices, key=lambda c: c.get("index", 0))
        texts = [str(c.get("text", "")) for c in choices]
        return [texts[i * n:(i + 1) * n] for i in range(n_prompts)]

    def complete(self, prompts: list[str], p: GenParams) -> list[list[str]]:
        out: list[list[str]] = []
        step = max(1, p.batch_size)
        for b in range(0, len(prompts), step):
            chunk = prompts[b:b + step]
            out += self._choices(self._post({**self._body(p), "prompt": chunk}), len(chunk), p.n_samples)
        return out

    def infill(self, prefixes: list[str], suffixes: list[str], p: GenParams) -> list[list[str]]:
        out: list[list[str]] = []
        for pre, suf in zip(prefixes, suffixes, strict=True):  # `suffix` takes one prompt per request
            out += self._choices(self._post({**self._body(p), "prompt": pre, "suffix": suf}), 1, p.n_samples)
        return out
