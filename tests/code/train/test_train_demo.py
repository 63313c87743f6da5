"""The demo stage in quick mode on a small stdlib corpus: tokenizer, pack, tiny pretraining, generation."""

from __future__ import annotations

from pathlib import Path

import pytest

from domainfm.core.demo import DemoContext
from domainfm.core.errors import UserError


def test_demo_needs_the_curated_corpus(tmp_path: Path) -> None:
    from domainfm.code.train.demo import run

    with pytest.raises(UserError, match="curated corpus"):
        run(DemoContext(out=tmp_path, quick=True))


def test_quick_demo_trains_and_generates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from transformers import AutoModelForCausalLM

    from domainfm.code.data.testing import make_stdlib_corpus
    from domainfm.code.train.demo import run

    corpus = make_stdlib_corpus(tmp_path / "corpus", n_repos=6, files_per_repo=5)
    ctx = DemoContext(out=tmp_path / "demo", quick=True, workers=1, state={"corpus": str(corpus)})
    run(ctx)
    out = capsys.readouterr().out
    assert "completion:" in out and "infill" in out
    final = Path(ctx.state["model"])
    assert (final / "model.safetensors").is_file() and (final / "tokenizer.json").is_file()
    from transformers import AutoTokenizer

    assert AutoModelForCausalLM.from_pretrained(final).config.vocab_size == len(AutoTokenizer.from_pretrained(final))
    assert Path(ctx.state["packed"], "index.json").is_file()
    assert (final.parent / "loss.png").is_file()
