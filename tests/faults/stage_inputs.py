"""The small real inputs of each long stage, built by the stages' own test helpers (imported, not copied)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from harness import load_helper


def curate_sources(root: Path) -> Path:
    """tests/code/curate: 4 repositories of stdlib files with exact and near duplicates, PII, a GPL repo."""
    return load_helper("code/curate/conftest.py", "_faults_curate_conftest").make_corpus(root)


def pack_inputs(root: Path) -> tuple[Path, Path]:
    """tests/code/data: a stdlib corpus in 2 Parquet shards + a 500-token BPE tokenizer trained on it."""
    from domainfm.code.data.testing import stdlib_rows, write_corpus
    from domainfm.code.tokenizer import train_tokenizer

    tricky = load_helper("code/data/conftest.py", "_faults_data_conftest").TRICKY
    rows = stdlib_rows(n_repos=8, files_per_repo=4, max_file_bytes=8000) + [tricky]
    corpus = write_corpus(root / "corpus", rows, n_shards=2, row_group_size=3)
    return corpus, train_tokenizer(corpus, root / "tok", vocab_size=500)


def pretrain_inputs(root: Path) -> tuple[Path, str]:
    """tests/code/train: packed shards of stdlib code + the 2-layer hidden-64 StarCoder2 preset."""
    from domainfm.code.model import model_config

    train = load_helper("code/train/conftest.py", "_faults_train_conftest")
    packed = train.make_packed(root / "packed_data")
    d = root / "micro_model"
    cfg = model_config("tiny", num_hidden_layers=2, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                       intermediate_size=256)
    cfg.save_pretrained(d)
    return packed, str(d / "config.json")


def slides(root: Path, n: int = 3) -> Path:
    """tests/pathology/slides: synthetic pyramid TIFFs (tifffile) with a tissue block, 0.25 µm/px."""
    synth = load_helper("pathology/slides/slides_synth.py", "_faults_slides_synth")
    src = root / "slides"
    src.mkdir(parents=True)
    for i in range(n):
        synth.write_pyramid(src / f"slide{i}.tiff", synth.make_base(seed=i))
    return src


def tile_images(root: Path) -> Path:
    """Like tests/pathology/ssl's `tiles`: 2 colour classes x 12 noisy 40 px PNG tiles."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for c, base in ((0, (230, 160, 200)), (1, (110, 60, 160))):
        d = root / "tiles" / str(c)
        d.mkdir(parents=True)
        for i in range(12):
            arr = np.clip(np.asarray(base) + rng.normal(0, 25, size=(40, 40, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(d / f"t{i}.png")
    return root / "tiles"


def mil_cohort(root: Path) -> tuple[Path, Path]:
    """tests/pathology/mil: per-slide feature files (5-30 tiles, a shifted witness dimension) + labels."""
    return load_helper("pathology/mil/mil_helpers.py", "_faults_mil_helpers").write_cohort(root, n_slides=16)
