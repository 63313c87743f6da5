"""`domainfm code pack CURATED_DIR --tokenizer TOK_DIR -o PACKED_DIR --seq-len N [--fim-rate 0.5] [--mixture M]`."""

from __future__ import annotations

from pathlib import Path

import typer

from domainfm.core.locks import writes_output


def register(app: typer.Typer) -> None:
    """Add `pack` to the code app."""

    @app.command("pack")
    @writes_output("out")
    def pack(
        corpus: Path = typer.Argument(..., help="curated corpus folder (CURATED_DIR with data/*.parquet)"),
        tokenizer: Path = typer.Option(..., "--tokenizer", help="tokenizer folder (`code tokenizer train`)"),
        out: Path = typer.Option(..., "-o", "--out", help="packed dataset folder to write"),
        seq_len: int = typer.Option(..., "--seq-len", help="tokens per sequence"),
        fim_rate: float = typer.Option(0.5, "--fim-rate",
                                       help="probability of FIM per row segment (Megatron's --fim-rate)"),
        fim_fragment_rate: float = typer.Option(0.5, "--fim-fragment-rate",
                                                help="probability of FIM per file fragment of a chosen segment "
                                                     "(Megatron's --fragment-fim-rate)"),
        fim_spm_rate: float = typer.Option(0.5, "--fim-spm-rate", help="probability of SPM (else PSM) per FIM"),
        repo_meta_rate: float = typer.Option(0.5, "--repo-meta-rate",
                                             help="probability a repository sample carries name + paths"),
        seed: int = typer.Option(0, "--seed", help="seed of every random choice (same seed -> same bytes)"),
        val_fraction: float = typer.Option(0.05, "--val-fraction",
                                           help="fraction of repositories held out for validation"),
        shard_mb: float = typer.Option(32.0, "--shard-mb", help="MiB of source per shard (work unit)"),
        workers: int = typer.Option(1, "--workers", help="worker processes"),
        mixture: str = typer.Option(None, "--mixture",
                                    help="weights per source: a preset (starcoder2-3b, starcoder2-7b, "
                                         "starcoder2-15b, natural) or a YAML file {weights: {lang:Python: 2, "
                                         "issue: 0.5, default: 1}}; the draws use --seed"),
        overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing output folder"),
    ) -> None:
        """Build repository-context samples, tokenise, cut into fixed-length rows, and apply FIM per row."""
        from domainfm.code.data.pack import pack_corpus

        idx = pack_corpus(corpus, tokenizer, out, seq_len, fim_rate=fim_rate, seed=seed,
                          val_fraction=val_fraction, workers=workers, fim_spm_rate=fim_spm_rate,
                          repo_meta_rate=repo_meta_rate, shard_mb=shard_mb, overwrite=overwrite,
                          fim_fragment_rate=fim_fragment_rate, mixture=mixture)
        print(summary(idx))


def summary(idx: dict) -> str:
    lines = [f"packed {idx['corpus_rows']} files, seq_len {idx['seq_len']}, dtype {idx['dtype']}:"]
    total = 0
    for name, sp in idx["splits"].items():
        slots = sp["n_seqs"] * idx["seq_len"]
        total += sp["n_tokens"]
        waste = 100.0 * sp["n_pad_tokens"] / slots if slots else 0.0
        n_fim = sp["fim_psm"] + sp["fim_spm"]
        lines.append(f"  {name:<5} {sp['n_repos']:>6} repos {sp['n_files']:>8} files {sp['n_tokens']:>12,} tokens "
                     f"{sp['n_seqs']:>8} seqs  padding {waste:.2f}%  truncated {sp.get('n_truncated_tokens', 0)} tokens  "
                     f"FIM {n_fim} (PSM {sp['fim_psm']} / SPM {sp['fim_spm']})  "
                     f"with metadata {sp['samples_with_meta']}")
    if "mixture" in idx:
        mix = idx["mixture"]
        lines.append(f"  mixture {mix['name']} (seed {mix['seed']}): source weight rows -> train rows out, "
                     "train tokens")
        train_src = idx["splits"]["train"].get("by_source", {})
        for src, st in mix["sources"].items():
            lines.append(f"    {src:<24} {st['weight']:>7.4g} {st['train_rows_in']:>8} -> {st['train_rows_out']:>8}"
                         f"  {train_src.get(src, {}).get('tokens', 0):>12,} tokens")
    if "seconds" in idx and idx["seconds"] > 0:
        lines.append(f"  {total:,} tokens in {idx['seconds']:.1f}s ({total / idx['seconds']:,.0f} tokens/s)")
    return "\n".join(lines)
