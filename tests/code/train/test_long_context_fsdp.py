"""The long-context stage under FSDP (2 CPU processes, gloo, `torchrun -m domainfm code pretrain-long-context
--fsdp`) and from a sharded (torch.distributed.checkpoint) base checkpoint, in 1 process and in 2 FSDP ranks.

What could go wrong and is checked: the stage's step 0 (after the base weights are loaded, before any update)
must hold the base weights bit for bit on every path (FSDP: each rank keeps its shards of a full state dict
read from `final/`, or reads only its shards from the DCP folder; one process: the DCP chunks of both writers
stitched), and the stage model must carry the recipe's RoPE theta and context, on every rank.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # three torchrun launches (~15 s each on 2 idle cores)

# The recipe of our own sizes (stage_config.RECIPES["tiny"]), as published for StarCoder2-3B/7B (arXiv:2402.19173
# section 6.1 / 6, huggingface.co/bigcode/starcoder2-{3b,7b}/config.json): base stage 4,096 tokens at theta 1e5,
# long-context stage 16,384 tokens at theta 1e6 (3B: 999999.44, 7B: 1e6), full attention (tiny has no window)
BASE_CONTEXT, BASE_THETA = 4096, 1e5
STAGE_CONTEXT, STAGE_THETA, STAGE_WINDOW = 16384, 1e6, None
BASE_STEPS, LONG = 4, 128

# every rank, right after the stage's set-up (base weights loaded, step 0, no update yet): the gathered full
# state dict (rank 0), its own RoPE inv_freq buffer and how many tensor elements it read from DCP folders;
# then the stage runs on through the real CLI
DUMP = """
import math, os, sys, torch
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from domainfm.code.train.stages import LongContextTrainer

_setup, _read, READ = LongContextTrainer._setup, FileSystemReader.read_data, []

def read_data(self, plan, planner):  # the chunks this rank reads: ReadItem.lengths = a chunk's shape
    READ.append(sum(math.prod(item.lengths) for item in plan.items))
    return _read(self, plan, planner)

def setup(self):
    _setup(self)
    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)  # collective; rank 0 gets the tensors
    sd = get_model_state_dict(self.raw, options=opts)
    inv = self.raw.model.rotary_emb.inv_freq.detach().cpu().clone()
    torch.save({"model": sd, "inv_freq": inv, "step": self.step, "world_size": self.info.world_size,
                "fsdp_params": sum(type(p).__name__ == "DTensor" for p in self.raw.parameters()),
                "read_elements": sum(READ)},
               os.environ["DUMP"] + f".rank{self.info.rank}.pt")

LongContextTrainer._setup, FileSystemReader.read_data = setup, read_data
from domainfm.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def long_packed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same sources and tokenizer as `packed_dir` (64 tokens a row), packed at LONG tokens a row (this
    folder's conftest builder, loaded under its own name: several test folders have a module called conftest)."""
    spec = importlib.util.spec_from_file_location("_train_conftest", Path(__file__).with_name("conftest.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.make_packed(tmp_path_factory.mktemp("long_packed"), seq_len=LONG)


@pytest.fixture(scope="module")
def fsdp_base(packed_dir: Path, tmp_path_factory: pytest.TempPathFactory, torchrun) -> Path:  # noqa: ANN001
    """A 2-rank FSDP base run (sharded checkpoints at steps 2 and 4, `final/` streamed from step 4).

    Its model is the micro StarCoder2 of conftest's `micro_preset` (tiny's family, 2 layers, hidden 64,
    context 4,096, theta 1e5), saved in a folder named `tiny`: the stage finds its recipe by the preset's name.
    """
    from domainfm.code.model import model_config

    root = tmp_path_factory.mktemp("lc_fsdp")
    model_config("tiny", num_hidden_layers=2, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=256).save_pretrained(root / "tiny")
    out = root / "base"
    res = torchrun(["-m", "domainfm", "code", "pretrain", "--data", str(packed_dir), "--preset", str(root / "tiny"),
                    "-o", str(out), "--batch-size", "2", "--max-steps", str(BASE_STEPS), "--warmup", "1", "--lr",
                    "3e-3", "--save-every", "2", "--eval-every", "0", "--eval-batches", "1", "--seed", "5",
                    "--no-tensorboard", "--device", "cpu", "--fsdp"])
    assert res.returncode == 0, res.stderr[-3000:]
    return out


def ckpt(run: Path, step: int) -> Path:
    return run / "checkpoints" / f"step_{step:08d}"


def stage_fsdp(init_from: Path, data: Path, out: Path, torchrun) -> list[dict]:  # noqa: ANN001
    """`torchrun --nproc-per-node 2 code pretrain-long-context --fsdp` (theta from the recipe, 1 step) with
    the DUMP hook; returns each rank's dump of step 0."""
    import torch

    script = out.parent / "dump_stage.py"
    script.write_text(DUMP)
    res = torchrun([str(script), "code", "pretrain-long-context", "--init-from", str(init_from), "--data", str(data),
                    "-o", str(out), "--context", str(STAGE_CONTEXT), "--batch-size", "2", "--max-steps", "1",
                    "--warmup", "1", "--lr", "1e-3", "--eval-batches", "1", "--no-tensorboard", "--device", "cpu",
                    "--fsdp"], env_extra={"DUMP": str(out.parent / "start")})
    assert res.returncode == 0, res.stderr[-3000:]
    return [torch.load(out.parent / f"start.rank{r}.pt", weights_only=False) for r in range(2)]


def assert_stage_rope(inv_freqs: list, mcfg) -> None:  # noqa: ANN001
    """Every rank's RoPE inv_freq_i = theta^(-2i/d) of the stage's theta (computed here in float64; the model's
    float32 arithmetic rounds differently by ~1 ulp, the base theta 1e5 is off by up to 7x), the same on all."""
    import torch

    d = mcfg.hidden_size // mcfg.num_attention_heads
    want = (1.0 / (STAGE_THETA ** (torch.arange(0, d, 2, dtype=torch.float64) / d))).float()
    for inv in inv_freqs:
        torch.testing.assert_close(inv.float(), want, rtol=1e-6, atol=0)
        assert torch.equal(inv, inv_freqs[0])


def assert_same_weights(got: dict, want: dict) -> None:
    import torch

    assert got.keys() == want.keys()
    diff = [k for k in want if not torch.equal(got[k], want[k])]
    assert not diff, f"{len(diff)} tensors differ from the base weights, e.g. {diff[:3]}"


def assert_stage_model(out: Path, base_final: Path) -> None:
    """The stage's exported model carries the recipe's theta / context / window; the base had the base stage's."""
    from transformers import AutoConfig

    from domainfm.code.train.stages import rope_theta

    base = AutoConfig.from_pretrained(base_final)
    assert (rope_theta(base), base.max_position_embeddings) == (BASE_THETA, BASE_CONTEXT)
    final = AutoConfig.from_pretrained(out / "final")
    assert (rope_theta(final), final.max_position_embeddings, final.sliding_window) == \
        (STAGE_THETA, STAGE_CONTEXT, STAGE_WINDOW)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1] and rows[0]["tokens"] == 2 * 2 * LONG  # 2 ranks x batch 2 x LONG


def test_fsdp_stage_starts_from_the_base_final_weights(fsdp_base: Path, long_packed: Path, tmp_path: Path,
                                                        torchrun) -> None:  # noqa: ANN001
    """Base run folder -> its final/ -> every rank keeps its shards of the full state dict (set_model_state_dict)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    out = tmp_path / "stage"
    dumps = stage_fsdp(fsdp_base, long_packed, out, torchrun)
    assert [d["step"] for d in dumps] == [0, 0] and dumps[0]["world_size"] == 2
    assert [d["read_elements"] for d in dumps] == [0, 0]  # final/ is safetensors: no DCP read
    assert dumps[0]["fsdp_params"] > 0  # the model the weights went into was sharded
    base = AutoModelForCausalLM.from_pretrained(fsdp_base / "final", dtype=torch.float32).state_dict()
    assert_same_weights(dumps[0]["model"], base)
    assert_stage_rope([d["inv_freq"] for d in dumps], AutoConfig.from_pretrained(out / "final"))
    assert_stage_model(out, fsdp_base / "final")


def test_fsdp_stage_starts_from_a_sharded_base_checkpoint(fsdp_base: Path, long_packed: Path, tmp_path: Path,
                                                          torchrun) -> None:  # noqa: ANN001
    """A DCP checkpoint of the 2-rank base (step 2, not the final weights) -> 2 FSDP ranks, each its shards."""
    import torch
    from transformers import AutoConfig

    from domainfm.code.train.dcp_export import read_tensors

    src = ckpt(fsdp_base, 2)
    assert sorted(p.name for p in src.iterdir())[:3] == [".metadata", "__0_0.distcp", "__1_0.distcp"]
    want = read_tensors(src)
    assert not all(torch.equal(want[k], v) for k, v in read_tensors(ckpt(fsdp_base, BASE_STEPS)).items())
    out = tmp_path / "stage"
    dumps = stage_fsdp(src, long_packed, out, torchrun)
    assert [d["step"] for d in dumps] == [0, 0] and dumps[0]["fsdp_params"] > 0
    assert_same_weights(dumps[0]["model"], want)
    # each rank read only its own shards: together every stored element once, no rank the whole model
    total = sum(t.numel() for t in want.values())
    assert sum(d["read_elements"] for d in dumps) == total
    assert all(0 < d["read_elements"] < 0.6 * total for d in dumps), [d["read_elements"] for d in dumps]
    assert_stage_rope([d["inv_freq"] for d in dumps], AutoConfig.from_pretrained(out / "final"))
    assert_stage_model(out, fsdp_base / "final")


def test_one_process_stage_starts_from_a_sharded_base_run(fsdp_base: Path, long_packed: Path,
                                                          tmp_path: Path) -> None:
    """A base run with no final/ (stopped after its last sharded checkpoint) -> its newest DCP checkpoint ->
    one plain process: both writers' chunks stitched, no process group."""

    from domainfm.code.train.dcp_export import read_tensors
    from domainfm.code.train.dist import shutdown_distributed
    from domainfm.code.train.stage_config import LongContextConfig
    from domainfm.code.train.stages import LongContextTrainer, base_state_dict, find_base, prepare, rope_theta

    run = tmp_path / "base_unfinished"  # the base run as a kill before its export would leave it
    shutil.copytree(fsdp_base / "checkpoints", run / "checkpoints")
    shutil.copy(fsdp_base / "config.yaml", run / "config.yaml")
    base = find_base(run)
    assert base.weights == ckpt(run, BASE_STEPS) and base.sharded and Path(base.preset).name == "tiny"
    assert (rope_theta(base.config), base.config.max_position_embeddings) == (BASE_THETA, BASE_CONTEXT)
    want = read_tensors(ckpt(fsdp_base, BASE_STEPS))
    assert_same_weights(base_state_dict(base), want)

    cfg = LongContextConfig(init_from=str(run), data=str(long_packed), out=str(tmp_path / "lc"),
                            context=STAGE_CONTEXT, batch_size=2, max_steps=1, threads=1, tensorboard=False,
                            device="cpu")
    tr = LongContextTrainer(cfg, prepare(cfg))
    try:
        tr._setup()
    finally:
        shutdown_distributed()
    assert tr.step == 0 and not tr.info.distributed
    assert (rope_theta(tr.mcfg), tr.mcfg.max_position_embeddings, tr.mcfg.sliding_window) == \
        (STAGE_THETA, STAGE_CONTEXT, STAGE_WINDOW)
    assert_stage_rope([tr.raw.model.rotary_emb.inv_freq], tr.mcfg)
    assert_same_weights(tr.raw.state_dict(), want)
    # the tied LM head is still the embedding (loaded in place, not replaced by a copy)
    assert tr.raw.lm_head.weight.data_ptr() == tr.raw.model.embed_tokens.weight.data_ptr()


def test_a_sharded_base_that_does_not_fit_is_a_one_line_error(fsdp_base: Path, long_packed: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """A DCP checkpoint whose model_config.json no longer matches its tensors: refused in one line, not a
    traceback (DCP's own check names the tensor and both shapes)."""
    from domainfm.cli import main

    src = tmp_path / "base" / "checkpoints" / f"step_{BASE_STEPS:08d}"
    shutil.copytree(ckpt(fsdp_base, BASE_STEPS), src)
    cfg = json.loads((src / "model_config.json").read_text())
    (src / "model_config.json").write_text(json.dumps({**cfg, "intermediate_size": 128}))  # stored: 256
    assert main(["code", "pretrain-long-context", "--init-from", str(src), "--data", str(long_packed), "-o",
                 str(tmp_path / "lc"), "--max-steps", "1", "--batch-size", "2", "--threads", "1", "--no-tensorboard",
                 "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "do not fit" in err and "mlp.c_fc.weight" in err, err
