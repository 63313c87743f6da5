"""Names and other PII from a local token-classification model (StarPII-style), `--pii-model DIR`.

StarCoder redacted names, usernames, emails, keys and passwords with StarPII, a token-classification
model. We accept any local Hugging Face model folder of that kind (config with `id2label`, a fast
tokenizer for character offsets, weights); nothing is downloaded (`local_files_only`). Entity groups
map to replacements such as `<NAME>`; long files run in overlapping windows (the pipeline's `stride`).
"""

from __future__ import annotations

from pathlib import Path

from domainfm.code.curate.pii import Redaction
from domainfm.core.errors import UserError

# StarPII's entity groups -> (redaction type, replacement)
LABELS = {
    "NAME": ("name", "<NAME>"), "USERNAME": ("username", "<USERNAME>"), "EMAIL": ("email", "<EMAIL>"),
    "KEY": ("key", "<KEY>"), "PASSWORD": ("password", "<PASSWORD>"), "IP_ADDRESS": ("ip_address", "<IP_ADDRESS>"),
}


class NerPII:
    """`NerPII(model_dir)(text) -> [Redaction]` for the entity groups in `LABELS` scoring >= min_score."""

    def __init__(self, model_dir: str | Path, device: str = "cpu", min_score: float = 0.5,
                 stride: int = 64) -> None:
        self.model_dir = Path(model_dir)
        self.device = device
        self.min_score = min_score
        self.stride = stride
        self._pipe = None  # loaded on first call: no I/O in the constructor

    def _load(self):
        if not (self.model_dir / "config.json").is_file():
            raise UserError(f"--pii-model: no model folder (config.json) at {self.model_dir}")
        from transformers import AutoModelForTokenClassification, AutoTokenizer, pipeline

        tok = AutoTokenizer.from_pretrained(self.model_dir, local_files_only=True)
        if not tok.is_fast:
            raise UserError(f"--pii-model {self.model_dir}: needs a fast tokenizer (tokenizer.json) for offsets")
        model = AutoModelForTokenClassification.from_pretrained(self.model_dir, local_files_only=True)
        return pipeline("token-classification", model=model, tokenizer=tok, device=self.device,
                        aggregation_strategy="simple", stride=self.stride)

    def __call__(self, text: str) -> list[Redaction]:
        if self._pipe is None:
            self._pipe = self._load()
        if not text.strip():
            return []
        out = []
        for ent in self._pipe(text):
            group = str(ent.get("entity_group", "")).upper()
            if group in LABELS and float(ent["score"]) >= self.min_score and ent["end"] > ent["start"]:
                typ, rep = LABELS[group]
                out.append(Redaction(int(ent["start"]), int(ent["end"]), typ, "ner", rep))
        return out
