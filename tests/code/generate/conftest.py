from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def gen_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from domainfm.code.data.testing import make_stdlib_corpus
    from domainfm.code.tokenizer import train_tokenizer

    corpus = make_stdlib_corpus(tmp_path_factory.mktemp("corpus"), n_repos=3, files_per_repo=3)
    return train_tokenizer(corpus, tmp_path_factory.mktemp("tok") / "tok", vocab_size=400)


def save_tiny_model(out: Path, tok_dir: Path, seed: int = 0, always: int | None = None) -> Path:
    """A randomly initialised 2-layer Starcoder2 saved with our tokenizer.

    `always=ID` makes the model emit token ID at every step (final LayerNorm -> constant vector e,
    lm_head row ID = e, other rows 0), for testing where generation stops."""
    import torch
    from transformers import AutoTokenizer, Starcoder2Config, Starcoder2ForCausalLM

    tok = AutoTokenizer.from_pretrained(tok_dir)
    cfg = Starcoder2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                           sliding_window=None, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                           tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = Starcoder2ForCausalLM(cfg).eval()
    if always is not None:
        with torch.no_grad():
            e = torch.randn(32)
            model.model.norm.weight.zero_()
            model.model.norm.bias.copy_(e)
            model.lm_head.weight.zero_()
            model.lm_head.weight[always] = e
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def make_model():  # noqa: ANN201
    return save_tiny_model


@pytest.fixture(scope="session")
def tiny_model(gen_tokenizer: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("model") / "m", gen_tokenizer)
