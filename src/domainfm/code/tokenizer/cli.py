"""`domainfm code tokenizer train CURATED_DIR -o TOK_DIR --vocab-size N`."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add `tokenizer train` to the code app."""
    tok_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                          help="Train / inspect the byte-level BPE tokenizer.")

    @tok_app.command("train")
    def train(
        corpus: Path = typer.Argument(..., help="curated corpus folder (CURATED_DIR with data/*.parquet)"),
        out: Path = typer.Option(..., "-o", "--out", help="tokenizer folder to write"),
        vocab_size: int = typer.Option(49152, "--vocab-size", help="vocabulary size (StarCoder2: 49152)"),
        min_frequency: int = typer.Option(2, "--min-frequency", help="minimum pair count for a merge"),
        max_bytes: int = typer.Option(None, "--max-bytes", help="read at most this many bytes of text"),
        overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing tokenizer folder"),
    ) -> None:
        """Train the tokenizer on a curated corpus (streamed) and save a Hugging Face tokenizer folder."""
        import json

        from domainfm.code.tokenizer.train import train_tokenizer

        d = train_tokenizer(corpus, out, vocab_size=vocab_size, min_frequency=min_frequency,
                            max_bytes=max_bytes, overwrite=overwrite)
        st = json.loads((d / "training_stats.json").read_text())
        print(f"tokenizer: vocab {st['vocab_size']} from {st['files_read']} files "
              f"({st['bytes_read'] / 2**20:.1f} MiB) in {st['seconds']:.1f}s -> {d}")

    app.add_typer(tok_app, name="tokenizer", help="Train the byte-level BPE tokenizer.")
