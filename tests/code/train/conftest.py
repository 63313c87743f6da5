"""Fixtures for the pretraining tests: a real byte-level BPE tokenizer and packed shards of real code.

Built here with HF `tokenizers` and the `shards.py` writers (independent of `domainfm code pack`), from
Python standard-library sources, so the tests need no network and no other stage.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from domainfm.code.data.shards import token_dtype, write_index, write_shard

SPECIAL = ["<|endoftext|>", "<fim_prefix>", "<fim_middle>", "<fim_suffix>", "<fim_pad>", "<repo_name>", "<file_sep>"]
SEQ_LEN = 64


def _sources() -> list[str]:
    import json as json_mod

    root = Path(json_mod.__file__).parent.parent  # the stdlib folder
    files = sorted(root.glob("*.py"))[:40]
    return [f.read_text(encoding="utf-8", errors="replace")[:6000] for f in files]


def make_tokenizer(out: Path, texts: list[str], vocab_size: int = 512) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>",
                                   unk_token="<|endoftext|>", pad_token="<|endoftext|>",
                                   additional_special_tokens=SPECIAL[1:])
    fast.save_pretrained(out)
    return out


def make_packed(root: Path, seq_len: int = SEQ_LEN, n_train_shards: int = 2) -> Path:
    """A PACKED_DIR (train in `n_train_shards` shards + val) whose index points at a tokenizer and a corpus."""
    from transformers import AutoTokenizer

    texts = _sources()
    corpus = root / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    (corpus / "stats.json").write_text(json.dumps({"files_kept": len(texts), "repos": 1, "bytes": 12345}))
    tok_dir = make_tokenizer(root / "tokenizer", texts)
    tok = AutoTokenizer.from_pretrained(tok_dir)
    eos = tok.convert_tokens_to_ids("<|endoftext|>")
    ids: list[int] = []
    for t in texts:
        ids += tok(t)["input_ids"] + [eos]
    n = len(ids) // seq_len
    arr = np.asarray(ids[: n * seq_len], dtype=token_dtype(len(tok))).reshape(n, seq_len)
    n_val = max(4, n // 10)
    val, train = arr[:n_val], arr[n_val:]
    packed = root / "packed"
    shards = []
    for i, part in enumerate(np.array_split(train, n_train_shards)):
        write_shard(packed / f"train/{i:05d}.bin", part)
        shards.append({"file": f"train/{i:05d}.bin", "n_seqs": int(part.shape[0])})
    write_shard(packed / "val/00000.bin", val)
    write_index(packed, {
        "seq_len": seq_len, "dtype": str(arr.dtype), "vocab_size": len(tok), "seed": 0, "fim_rate": 0.5,
        "tokenizer": str(tok_dir), "corpus": str(corpus),
        "splits": {"train": {"shards": shards, "n_seqs": int(train.shape[0]), "n_tokens": int(train.size)},
                   "val": {"shards": [{"file": "val/00000.bin", "n_seqs": int(val.shape[0])}],
                           "n_seqs": int(val.shape[0]), "n_tokens": int(val.size)}},
    })
    return packed


@pytest.fixture(scope="session")
def packed_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_packed(tmp_path_factory.mktemp("packed_data"))


def run_cli(args: list[str], env_extra: dict[str, str] | None = None, **kw) -> subprocess.Popen:  # noqa: ANN003
    """`python -m domainfm ARGS` in a child process (so it can be killed with SIGKILL)."""
    env = {**os.environ, "DOMAINFM_PROGRESS": "0", "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.Popen([sys.executable, "-m", "domainfm", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


@pytest.fixture
def cli_proc():  # noqa: ANN201
    return run_cli


def kill_after_first_checkpoint(p: subprocess.Popen, out: Path, timeout: float = 900) -> None:
    """SIGKILL the run `p` as soon as `out/checkpoints/latest` exists (it must not exit before)."""
    deadline = time.time() + timeout
    while not (out / "checkpoints" / "latest").exists():
        assert p.poll() is None, p.communicate()[1]
        assert time.time() < deadline
        time.sleep(0.02)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()


@pytest.fixture
def kill_after_checkpoint():  # noqa: ANN201
    return kill_after_first_checkpoint


@pytest.fixture(scope="session")
def micro_preset(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A 2-layer, hidden-64 StarCoder2 config.json (the `tiny` preset's family, ~100x cheaper), as `--preset`."""
    from domainfm.code.model import model_config

    d = tmp_path_factory.mktemp("micro_model")
    cfg = model_config("tiny", num_hidden_layers=2, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                       intermediate_size=256)
    cfg.save_pretrained(d)
    return str(d / "config.json")


FSDP_STEPS = 8


def fsdp_args(packed: Path, preset: str, out: Path, batch_size: int = 2) -> list[str]:
    """The `code pretrain` arguments of the FSDP / sharded-checkpoint tests (8 steps, checkpoints at 3, 6, 8)."""
    return ["code", "pretrain", "--data", str(packed), "--preset", preset, "-o", str(out), "--batch-size",
            str(batch_size), "--grad-accum", "2", "--max-steps", str(FSDP_STEPS), "--warmup", "1", "--lr", "3e-3",
            "--save-every", "3", "--eval-every", "4", "--eval-batches", "1", "--seed", "5", "--no-tensorboard"]


@pytest.fixture(scope="session", name="fsdp_args")
def _fsdp_args():  # noqa: ANN202
    """`fsdp_args(packed, preset, out, batch_size=2)`: the arguments of `fsdp_run` (for reruns and references)."""
    return fsdp_args


@pytest.fixture(scope="session")
def fsdp_run(packed_dir: Path, micro_preset: str, tmp_path_factory: pytest.TempPathFactory, torchrun) -> Path:  # noqa: ANN001
    """One uninterrupted 2-process FSDP run (sharded checkpoints, the FSDP default), shared by
    test_pretrain_fsdp.py and test_dcp.py (a torchrun start-up is the slow part of these tests)."""
    out = tmp_path_factory.mktemp("fsdp") / "run"
    res = torchrun(["-m", "domainfm", *fsdp_args(packed_dir, micro_preset, out), "--fsdp"])
    assert res.returncode == 0, res.stderr[-3000:]
    return out
