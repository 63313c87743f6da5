"""The generation layer: completion and fill-in-the-middle on any `AutoModelForCausalLM` folder.

Built on transformers `generate` (KV cache on), with what a harness needs around it: batches with left
padding (prompts sorted by length to waste less padding, results returned in input order),
`n_samples` per prompt, temperature / top-p sampling reproducible from `seed` (in a forked RNG, the
caller's RNG is left untouched), stop strings checked while generating (a row stops as soon as its
text contains one) and cut from the result, and the prompt never included in the result.

FIM prompts follow StarCoder2 (PSM): ``<fim_prefix>PREFIX<fim_suffix>SUFFIX<fim_middle>``, built from token
ids so the layout is exact; generation stops at `<|endoftext|>`, `<file_sep>` or any FIM token, and only
the middle is returned.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from domainfm.core.errors import UserError, require
from domainfm.core.progress import get_logger, progress

log = get_logger("generate")

# FIM token spellings: StarCoder / StarCoder2 (ours), then SantaCoder's
FIM_TOKEN_SETS = [("<fim_prefix>", "<fim_suffix>", "<fim_middle>"), ("<fim-prefix>", "<fim-suffix>", "<fim-middle>")]
# tokens that end a middle / a completion besides EOS (when the vocabulary has them)
END_TOKENS = ["<|endoftext|>", "<file_sep>", "<fim_prefix>", "<fim_suffix>", "<fim_middle>", "<fim_pad>",
              "<fim-prefix>", "<fim-suffix>", "<fim-middle>", "<fim-pad>"]


@dataclass
class GenerationConfig:
    max_new_tokens: int = 128
    temperature: float = 0.0  # 0 = greedy decoding
    top_p: float = 1.0
    seed: int = 0
    stop: list[str] = field(default_factory=list)  # cut the text at the first of these (not included)
    n_samples: int = 1  # completions per prompt
    batch_size: int = 8  # sequences per `generate` call

    def validate(self) -> None:
        if self.max_new_tokens < 1:
            raise UserError(f"max_new_tokens must be >= 1 (got {self.max_new_tokens})")
        if self.temperature < 0:
            raise UserError(f"temperature must be >= 0 (got {self.temperature})")
        if not 0 < self.top_p <= 1:
            raise UserError(f"top_p must be in (0, 1] (got {self.top_p})")
        if self.n_samples < 1 or self.batch_size < 1:
            raise UserError("n_samples and batch_size must be >= 1")


class Generator:
    """`Generator(model_dir).complete(prompts, cfg)` / `.infill(prefixes, suffixes, cfg)`; loads lazily."""

    def __init__(self, model_dir: str | Path, device: str = "cpu", dtype: str | None = None) -> None:
        self.model_dir = Path(model_dir)
        self.device = device
        self.dtype = dtype
        self._model: Any = None
        self._tok: Any = None

    # ---- loading -------------------------------------------------------------------------------
    def _load(self) -> None:
        if self._model is not None:
            return
        torch = require("torch", "code")
        transformers = require("transformers", "code")
        if not (self.model_dir / "config.json").is_file():
            raise UserError(f"{self.model_dir}: not a model folder (no config.json)")
        device = self.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        dtype = getattr(torch, self.dtype) if self.dtype else (torch.bfloat16 if device.startswith("cuda")
                                                                 else torch.float32)
        try:
            tok = transformers.AutoTokenizer.from_pretrained(str(self.model_dir))
            model = transformers.AutoModelForCausalLM.from_pretrained(str(self.model_dir), dtype=dtype)
        except (OSError, ValueError) as exc:
            raise UserError(f"{self.model_dir}: cannot load model/tokenizer ({str(exc).splitlines()[0]})") from None
        tok.padding_side = "left"
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        self._tok, self._model = tok, model.to(device).eval()

    @property
    def tokenizer(self) -> Any:
        self._load()
        return self._tok

    @property
    def model(self) -> Any:
        self._load()
        return self._model

    def _token_id(self, token: str) -> int | None:
        vocab = self.tokenizer.get_vocab()
        return vocab.get(token)

    def fim_ids(self) -> tuple[int, int, int]:
        """(prefix, suffix, middle) token ids of this tokenizer, or a UserError when it has none."""
        for names in FIM_TOKEN_SETS:
            ids = [self._token_id(t) for t in names]
            if all(i is not None for i in ids):
                return ids[0], ids[1], ids[2]  # type: ignore[return-value]
        raise UserError(f"{self.model_dir}: the tokenizer has no FIM tokens (<fim_prefix>/<fim_suffix>/<fim_middle>)")

    def _end_ids(self, fim: bool) -> list[int]:
        ids = {self.tokenizer.eos_token_id} if self.tokenizer.eos_token_id is not None else set()
        if fim:
            ids |= {i for t in END_TOKENS if (i := self._token_id(t)) is not None}
        return sorted(ids)

    # ---- public API ----------------------------------------------------------------------------
    def complete(self, prompts: list[str], cfg: GenerationConfig | None = None) -> list[list[str]]:
        """`cfg.n_samples` left-to-right completions per prompt (prompt not included, stops applied)."""
        cfg = cfg or GenerationConfig()
        cfg.validate()
        enc = [self.tokenizer(p).input_ids for p in prompts]
        return self._run(enc, cfg, self._end_ids(fim=False))

    def infill(self, prefixes: list[str], suffixes: list[str], cfg: GenerationConfig | None = None) -> list[list[str]]:
        """`cfg.n_samples` middles per (prefix, suffix) pair, from a PSM FIM prompt; only the middle returned."""
        cfg = cfg or GenerationConfig()
        cfg.validate()
        if len(prefixes) != len(suffixes):
            raise UserError(f"{len(prefixes)} prefixes but {len(suffixes)} suffixes")
        pre, suf, mid = self.fim_ids()
        enc = [[pre, *self._encode_text(p), suf, *self._encode_text(s), mid] for p, s in zip(prefixes, suffixes, strict=True)]
        return self._run(enc, cfg, self._end_ids(fim=True))

    def build_fim_prompt(self, prefix: str, suffix: str) -> list[int]:
        pre, suf, mid = self.fim_ids()
        return [pre, *self._encode_text(prefix), suf, *self._encode_text(suffix), mid]

    def _encode_text(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False).input_ids if text else []

    # ---- the loop ------------------------------------------------------------------------------
    def _run(self, enc: list[list[int]], cfg: GenerationConfig, end_ids: list[int]) -> list[list[str]]:
        torch = require("torch", "code")
        max_pos = getattr(self.model.config, "max_position_embeddings", None) or getattr(self.model.config,
                                                                                         "n_positions", None)
        if max_pos:
            budget = max_pos - cfg.max_new_tokens
            if budget < 1:
                raise UserError(f"max_new_tokens {cfg.max_new_tokens} >= the model's context {max_pos}")
            enc = [ids[-budget:] for ids in enc]  # keep the end of over-long prompts (next to the answer)
        # one work item per (prompt, sample); sorted by length so a batch wastes little padding
        items = sorted(((len(ids), i, s) for i, ids in enumerate(enc) for s in range(cfg.n_samples)),
                       key=lambda t: (-t[0], t[1], t[2]))
        out: list[list[str]] = [[""] * cfg.n_samples for _ in enc]
        show = len(items) > cfg.batch_size  # a bar only when there is more than one batch
        bar = progress(total=len(items), desc="generate", unit="seq") if show else None
        for b0 in range(0, len(items), cfg.batch_size):
            chunk = items[b0:b0 + cfg.batch_size]
            texts = self._generate_batch([enc[i] for _, i, _ in chunk], cfg, end_ids, seed=cfg.seed + b0, torch=torch)
            for (_, i, s), text in zip(chunk, texts, strict=True):
                out[i][s] = text
            if bar is not None:
                bar.update(len(chunk))
        if bar is not None:
            bar.close()
        return out

    def _generate_batch(self, batch: list[list[int]], cfg: GenerationConfig, end_ids: list[int], seed: int,
                        torch: Any) -> list[str]:
        tok, model = self.tokenizer, self.model
        width = max(len(x) for x in batch)
        pad = tok.pad_token_id
        # left padding: (B, T) ids and mask, the last position of every row is a real prompt token
        input_ids = torch.tensor([[pad] * (width - len(x)) + x for x in batch], device=self.device)
        mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in batch], device=self.device)
        sample = cfg.temperature > 0
        kwargs: dict[str, Any] = {"do_sample": sample, "max_new_tokens": cfg.max_new_tokens, "use_cache": True,
                                  "eos_token_id": end_ids or None, "pad_token_id": pad}
        if sample:
            kwargs.update(temperature=cfg.temperature, top_p=cfg.top_p, top_k=0)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        if cfg.stop:
            from domainfm.code.generate.stopping import stop_criteria

            kwargs["stopping_criteria"] = stop_criteria(tok, cfg.stop, width)
        devices = [torch.device(self.device).index or 0] if str(self.device).startswith("cuda") else []
        with torch.random.fork_rng(devices=devices), torch.inference_mode():
            torch.manual_seed(seed)
            gen = model.generate(input_ids=input_ids, attention_mask=mask, **kwargs)
        new = gen[:, width:].tolist()  # (B, new) generated ids only: the prompt is never returned
        texts = []
        for ids in new:
            cut = next((k for k, t in enumerate(ids) if t in end_ids), len(ids))
            texts.append(apply_stop(tok.decode(ids[:cut], skip_special_tokens=False), cfg.stop))
        return texts


def apply_stop(text: str, stop: list[str]) -> str:
    """Cut `text` at the earliest occurrence of any stop string."""
    cut = min((k for s in stop if s and (k := text.find(s)) >= 0), default=len(text))
    return text[:cut]

