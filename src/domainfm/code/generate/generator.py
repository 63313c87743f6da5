"""The generation layer: completion and fill-in-the-middle on any `AutoModelForCausalLM` folder.

Built on transformers `generate` (KV cache on), with what a harness needs around it: batches with left
padding (prompts sorted by length to waste less padding, results returned in input order),
`n_samples` per prompt, temperature / top-p sampling reproducible from `seed` (in a forked RNG, the
caller's RNG is left untouched), stop strings ended by transformers' own `stop_strings` while
generating and cut from the result (`stopping.apply_stop`), and the prompt never included in the result.

FIM prompts follow StarCoder2 (PSM): ``<fim_prefix>PREFIX<fim_suffix>SUFFIX<fim_middle>``, built from token
ids so the layout is exact; generation stops at `<|endoftext|>`, `<file_sep>` or any FIM token, and only
the middle is returned. With repository context (StarCoder2 paper, section 5.2) the prompt is
``<repo_name>NAME<file_sep>PATH\nCODE...<file_sep><fim_prefix>PATH\nPREFIX<fim_suffix>SUFFIX<fim_middle>``:
the file's path heads the prefix, as in training (`code/data/fim_rows.py`).

Prompts longer than the model's context (minus `max_new_tokens`) are cut as text, never through the
frame: context files go first (farthest first), then the prefix loses lines from its start and the
suffix from its end (the suffix keeps at most a quarter of the room the prefix needs); every FIM
token stays. Plain completions keep their end (the tokens next to the answer).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from domainfm.code.generate.stopping import apply_stop
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

    def infill(self, prefixes: list[str], suffixes: list[str], cfg: GenerationConfig | None = None, *,
               paths: list[str | None] | None = None, repo_name: str | None = None,
               context_files: list[tuple[str, str]] | None = None, spm: bool = False) -> list[list[str]]:
        """`cfg.n_samples` middles per (prefix, suffix) pair, from a PSM (or `spm`) FIM prompt; only the
        middle returned.

        `paths` (one per pair), `repo_name` and `context_files` ([(path, code)], other files of the
        repository) give the StarCoder2 repository-level prompt (see `build_fim_prompt`)."""
        cfg = cfg or GenerationConfig()
        cfg.validate()
        if len(prefixes) != len(suffixes):
            raise UserError(f"{len(prefixes)} prefixes but {len(suffixes)} suffixes")
        if paths is not None and len(paths) != len(prefixes):
            raise UserError(f"{len(prefixes)} prefixes but {len(paths)} paths")
        budget = self._prompt_budget(cfg)
        enc = [self.build_fim_prompt(p, s, max_len=budget, path=paths[i] if paths else None, repo_name=repo_name,
                                     context_files=context_files, spm=spm)
               for i, (p, s) in enumerate(zip(prefixes, suffixes, strict=True))]
        return self._run(enc, cfg, self._end_ids(fim=True))

    def build_fim_prompt(self, prefix: str, suffix: str, *, max_len: int | None = None, path: str | None = None,
                         repo_name: str | None = None, context_files: list[tuple[str, str]] | None = None,
                         spm: bool = False) -> list[int]:
        """Token ids of a PSM FIM prompt, `[<fim_prefix>, *PREFIX, <fim_suffix>, *SUFFIX, <fim_middle>]`, or
        with `spm` the SPM one packing trains on, `[<fim_prefix>, <fim_suffix>, *SUFFIX, <fim_middle>, *PREFIX]`
        (the middle then continues the prefix's own tokens, as in training).

        With `path`, `repo_name` or `context_files`, the StarCoder2 repository-level layout:
        ``<repo_name>NAME`` + ``<file_sep>PATH\\nCODE`` per context file + ``<file_sep><fim_prefix>PATH\\nPREFIX
        <fim_suffix>SUFFIX<fim_middle>``. `max_len` bounds the prompt's tokens: context files are dropped
        (farthest first), then the prefix text loses lines from its start and the suffix from its end;
        the FIM tokens always stay."""
        pre, suf, mid = self.fim_ids()
        repo = path is not None or repo_name is not None or bool(context_files)
        head: list[int] = []
        head_sep: list[int] = []
        files: list[list[int]] = []
        if repo:
            rid, sep = self._token_id("<repo_name>"), self._token_id("<file_sep>")
            if rid is None or sep is None:
                raise UserError(f"{self.model_dir}: the tokenizer has no <repo_name>/<file_sep> for repository context")
            head = [rid, *self._encode_text(repo_name or "")]
            files = [[sep, *self._encode_text(f"{p}\n{c}")] for p, c in context_files or []]
            head_sep = [sep]
        lead = f"{path}\n" if path is not None else ""

        def build(prefix_text: str, suffix_text: str) -> list[int]:
            p_ids, s_ids = self._encode_text(lead + prefix_text), self._encode_text(suffix_text)
            body = [pre, suf, *s_ids, mid, *p_ids] if spm else [pre, *p_ids, suf, *s_ids, mid]
            return [*head, *(t for f in files for t in f), *head_sep, *body] if repo else body

        ids = build(prefix, suffix)
        if max_len is None or len(ids) <= max_len:
            return ids
        while files and len(ids) > max_len:  # context first: the farthest file goes first
            files.pop(0)
            ids = build(prefix, suffix)
        if len(ids) <= max_len:
            return ids
        frame = len(build("", ""))
        room = max_len - frame
        if room < 0:
            raise UserError(f"the FIM frame alone ({frame} tokens with path and repository name) is longer than "
                            f"the {max_len} tokens left for the prompt")
        n_pre, n_suf = len(self._encode_text(prefix)), len(self._encode_text(suffix))
        keep_suf = min(n_suf, max(room - n_pre, room // 4))  # the prefix, next to the hole, comes first
        prefix, suffix = self._tail_text(prefix, room - keep_suf), self._head_text(suffix, keep_suf)
        ids = build(prefix, suffix)
        while len(ids) > max_len:  # re-tokenising at the new edges may add a token or two
            prefix = self._tail_text(prefix, len(self._encode_text(prefix)) - 1) if prefix else prefix
            suffix = suffix if prefix else self._head_text(suffix, len(self._encode_text(suffix)) - 1)
            ids = build(prefix, suffix)
        return ids

    def _tail_text(self, text: str, n: int) -> str:
        """The end of `text` in at most about `n` tokens, starting at a line start where one is in reach."""
        if n <= 0:
            return ""
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        if len(enc.input_ids) <= n:
            return text
        start = enc.offset_mapping[len(enc.input_ids) - n][0]
        nl = text.find("\n", start)
        if 0 <= nl < len(text) - 1 and text[start - 1:start] != "\n":
            start = nl + 1  # whole lines: the prompt starts at a line start
        return text[start:]

    def _head_text(self, text: str, n: int) -> str:
        """The start of `text` in at most about `n` tokens, ending at a line end where one is in reach."""
        if n <= 0:
            return ""
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        if len(enc.input_ids) <= n:
            return text
        end = enc.offset_mapping[n - 1][1]
        nl = text.rfind("\n", 0, end)
        return text[:nl + 1] if nl > 0 else text[:end]

    def _encode_text(self, text: str) -> list[int]:
        """Text of a FIM prompt -> ids, special-token *strings* kept as text (`split_special_tokens`), as
        packing tokenises training text: only the frame is made of special tokens."""
        return self.tokenizer(text, add_special_tokens=False, split_special_tokens=True).input_ids if text else []

    def _prompt_budget(self, cfg: GenerationConfig) -> int | None:
        """Tokens a prompt may have: the model's context minus `max_new_tokens` (None: no known limit)."""
        max_pos = getattr(self.model.config, "max_position_embeddings", None) or getattr(self.model.config,
                                                                                         "n_positions", None)
        if not max_pos:
            return None
        budget = max_pos - cfg.max_new_tokens
        if budget < 1:
            raise UserError(f"max_new_tokens {cfg.max_new_tokens} >= the model's context {max_pos}")
        return budget

    # ---- the loop ------------------------------------------------------------------------------
    def _run(self, enc: list[list[int]], cfg: GenerationConfig, end_ids: list[int]) -> list[list[str]]:
        torch = require("torch", "code")
        budget = self._prompt_budget(cfg)
        if budget is not None:
            # plain completions: keep the end of an over-long prompt (next to the answer); FIM prompts
            # were already fitted as text by `build_fim_prompt`, so this never cuts their frame
            enc = [ids[-budget:] for ids in enc]
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
        stops = [x for x in cfg.stop if x]
        if stops:  # transformers' StopStringCriteria: a row ends once its text ends with a stop string
            kwargs.update(stop_strings=stops, tokenizer=tok)
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


__all__ = ["GenerationConfig", "Generator", "apply_stop"]
