"""code.tokenizer: StarCoder2-style byte-level BPE (`domainfm code tokenizer train`)."""

from domainfm.code.tokenizer.special import PII_TOKENS, SPECIAL_TOKENS, STARCODER2_SPECIAL_TOKENS
from domainfm.code.tokenizer.train import train_tokenizer

__all__ = ["PII_TOKENS", "SPECIAL_TOKENS", "STARCODER2_SPECIAL_TOKENS", "train_tokenizer"]
