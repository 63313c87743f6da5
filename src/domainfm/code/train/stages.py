"""StarCoder2's second training stage: long-context continuation (`domainfm code pretrain-long-context`).

StarCoder2 (Lozhkov et al. 2024, arXiv:2402.19173) trains in two stages: the base model with a 4,096-token
context and RoPE base period theta = 1e5 (section 6.1), then "we further pre-trained each model for
long-context on 200B tokens from the same pre-training corpus, using a 16,384 context length with a
sliding window of 4,096" (section 6). The released checkpoints are the long-context models
(huggingface.co/bigcode/starcoder2-3b: "further trained on 200B of the pre-training corpus with a 16k context
length"), so the long-context theta of each size is the `rope_theta` of its published config.json (the
`starcoder2-*` presets, checked by tests/code/model/test_presets.py).

A stage run starts from a finished base run (`--init-from BASE_RUN`: its `final/` folder, else its newest
checkpoint, full `state.pt` or sharded DCP folder of an FSDP run), rewrites the model config (`rope_theta`, `max_position_embeddings`, optionally
`sliding_window`), loads the base weights unchanged and trains on data packed at the longer length
(`code pack --seq-len 16384`). Everything else is the ordinary trainer: its checkpoints, its resume after
kill -9 (the stage's own checkpoints take precedence over `--init-from`), its export.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from domainfm.code.train.checkpoint import is_complete, latest_checkpoint
from domainfm.code.train.stage_config import RECIPES, STAGE_DIR, STAGE_KEYS, LongContextConfig, StageSpec
from domainfm.code.train.trainer import Trainer
from domainfm.core.errors import UserError
from domainfm.core.io import atomic_write_text


@dataclass
class BaseRun:
    """What the stage starts from: the base model's transformers config and where its weights are."""

    config: Any
    weights: Path  # a final/ folder (save_pretrained), a checkpoint folder holding state.pt, or a sharded one
    preset: str | None  # the base run's preset name, when its config.yaml records one

    @property
    def sharded(self) -> bool:
        """A torch.distributed.checkpoint folder (`sharded.py`): `.metadata` + one `.distcp` per writer."""
        return (self.weights / ".metadata").is_file()


def find_base(init_from: str | Path) -> BaseRun:
    """Resolve `--init-from` (a run folder, its final/ folder or one of its checkpoints)."""
    from transformers import AutoConfig

    p = Path(init_from)
    if not p.exists():
        raise UserError(f"--init-from {p}: not found (give the base run's folder, its final/ or a checkpoint)")
    run = p
    if (p / "config.json").is_file():  # a final/ folder
        weights, run = p, p.parent
    elif is_complete(p):  # a checkpoint folder OUT/checkpoints/step_N, full (state.pt) or sharded (DCP)
        weights, run = p, p.parent.parent
    elif (p / "final" / "config.json").is_file():
        weights = p / "final"
    elif (ckpt := latest_checkpoint(p)) is not None:
        weights = ckpt
    else:
        raise UserError(f"--init-from {p}: no final/ folder and no checkpoint; is it a `code pretrain` run?")
    base_cfg = _read_yaml(run / "config.yaml")
    preset = base_cfg.get("preset") if isinstance(base_cfg.get("preset"), str) else None
    if (weights / "config.json").is_file():
        config = AutoConfig.from_pretrained(weights)
    elif (weights / ".metadata").is_file():  # sharded: the writer saved the model config next to the shards
        config, preset = _sharded_base_config(weights, preset)
    else:  # a checkpoint: its run's config names the preset; the embedding gives the vocabulary
        import torch

        from domainfm.code.train.trainer import model_config_for

        state = torch.load(weights / "state.pt", map_location="cpu", weights_only=False)
        run_cfg = state.get("config", base_cfg)
        emb = next(v for k, v in state["model"].items() if k.endswith("embed_tokens.weight"))
        config = model_config_for(run_cfg["preset"], int(emb.shape[0]))
        preset = run_cfg["preset"]
    if getattr(config, "model_type", None) != "starcoder2":
        raise UserError(f"--init-from {p}: a {getattr(config, 'model_type', '?')} model; the long-context stage "
                        "changes RoPE, which only the StarCoder2 family uses")
    return BaseRun(config, weights, preset)


def _sharded_base_config(ckpt: Path, preset: str | None) -> tuple[Any, str | None]:
    """(transformers config, preset) of a sharded checkpoint: its `model_config.json` (the exact config it was
    trained with, `sharded.save_sharded`), else its run's preset with the vocabulary of the stored embedding."""
    from transformers import AutoConfig

    from domainfm.code.train.checkpoint import load_checkpoint
    from domainfm.code.train.dcp_export import checkpoint_tensors
    from domainfm.code.train.trainer import model_config_for

    run_cfg = load_checkpoint(ckpt).get("config") or {}  # trainer.pt only: no weights are read here
    preset = run_cfg.get("preset", preset)
    if (ckpt / "model_config.json").is_file():
        return AutoConfig.from_pretrained(ckpt / "model_config.json"), preset
    emb = next((v for k, v in checkpoint_tensors(ckpt).items() if k.endswith("embed_tokens.weight")), None)
    if emb is None or not preset:
        raise UserError(f"--init-from {ckpt}: a sharded checkpoint without model_config.json, embedding or preset")
    return model_config_for(preset, int(emb.size[0])), preset


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) if path.is_file() else {}
    except yaml.YAMLError:
        data = {}
    return data if isinstance(data, dict) else {}


def rope_theta(mcfg: Any) -> float:
    """RoPE base period of a transformers config (transformers >= 5 keeps it in `rope_parameters`)."""
    rp = getattr(mcfg, "rope_parameters", None)
    return float(rp["rope_theta"]) if isinstance(rp, dict) and "rope_theta" in rp else float(mcfg.rope_theta)


def set_rope_theta(mcfg: Any, theta: float) -> None:
    rp = getattr(mcfg, "rope_parameters", None)
    if isinstance(rp, dict):
        mcfg.rope_parameters = {**rp, "rope_theta": theta}
    if hasattr(mcfg, "rope_theta") or not isinstance(rp, dict):  # transformers < 5
        mcfg.rope_theta = theta


def stage_model_config(base: BaseRun, cfg: LongContextConfig, seq_len: int) -> Any:
    """The base model's config with the stage's RoPE theta, context and attention window."""
    import copy

    mcfg = copy.deepcopy(base.config)
    theta = cfg.rope_theta
    if theta <= 0:
        recipe = RECIPES.get(Path(base.preset).name if base.preset else "")
        if recipe is None:
            raise UserError(f"no long-context recipe for the base preset {base.preset!r} "
                            f"(known: {', '.join(RECIPES)}); give --rope-theta")
        theta = recipe["long_context"].rope_theta
    context = cfg.context or seq_len
    if context < seq_len:
        raise UserError(f"--context {context} is shorter than the sequences trained on ({seq_len})")
    set_rope_theta(mcfg, float(theta))
    mcfg.max_position_embeddings = int(context)
    if cfg.sliding_window >= 0:
        mcfg.sliding_window = cfg.sliding_window or None
    return mcfg


def prepare(cfg: LongContextConfig) -> BaseRun:
    """Check the stage's settings, write OUT/stage_model/config.json and point `cfg.preset` at it."""
    from domainfm.code.data.shards import read_index

    if not cfg.init_from:
        raise UserError("no base run: give --init-from BASE_RUN (a `domainfm code pretrain` output folder)")
    if not cfg.data:
        raise UserError("no training data: give --data PACKED_DIR (packed at the stage's length, `code pack`)")
    out = Path(cfg.out)
    old = _read_yaml(out / "config.yaml") if latest_checkpoint(out) is not None else {}
    norm = {"init_from": lambda v: str(Path(v).resolve()) if v else v}
    changed = [k for k in STAGE_KEYS
               if old and norm.get(k, lambda v: v)(old.get(k)) != norm.get(k, lambda v: v)(getattr(cfg, k))]
    if changed and cfg.resume is not False:
        raise UserError(f"{out}: cannot resume, the stage was started with different {', '.join(changed)}; "
                        "use the same settings or another --out")
    base = find_base(cfg.init_from)
    seq_len = cfg.seq_len or int(read_index(cfg.data)["seq_len"])
    mcfg = stage_model_config(base, cfg, seq_len)
    path = out / STAGE_DIR / "config.json"
    atomic_write_text(path, json.dumps(mcfg.to_dict(), indent=2, sort_keys=True) + "\n")
    cfg.preset = str(path)
    return base


def base_state_dict(base: BaseRun) -> dict[str, Any]:
    """The base weights as a full state dict (tied embeddings included under both names), in this process
    alone (a sharded checkpoint is stitched from every writer's chunks by `dcp.load`, no process group)."""
    import torch

    if base.sharded:
        from domainfm.code.train.dcp_export import read_tensors

        return read_tensors(base.weights)
    if (base.weights / "state.pt").is_file():
        return torch.load(base.weights / "state.pt", map_location="cpu", weights_only=False)["model"]
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base.weights, dtype=torch.float32)
    return model.state_dict()


class LongContextTrainer(Trainer):
    """The trainer, started from the base run's weights instead of a fresh initialisation."""

    def __init__(self, cfg: LongContextConfig, base: BaseRun) -> None:
        super().__init__(cfg)
        self.base = base

    def _setup(self) -> None:
        super()._setup()
        if self.state is None:  # a fresh stage (a resumed one has its own weights): the base weights, unchanged
            self._load_base_weights()

    def _load_base_weights(self) -> None:
        if self.base.sharded:
            load_sharded_weights(self.base.weights, self.raw, self.info)
            return
        if self.cfg.fsdp and self.info.distributed:
            # rank 0 reads the full state dict (on CPU), every rank receives its shards of it: one copy of the
            # model in host memory per job, not one per rank (8 ranks x 60 GB for the 15B preset otherwise)
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

            sd = base_state_dict(self.base) if self.info.is_main else {}
            set_model_state_dict(self.raw, sd, options=StateDictOptions(full_state_dict=True,
                                                                         broadcast_from_rank0=True))
            return
        # in place: DDP, torch.compile and the optimizer keep referring to the same parameters
        missing, unexpected = self.raw.load_state_dict(base_state_dict(self.base), strict=False)
        tied = {"lm_head.weight"} if getattr(self.mcfg, "tie_word_embeddings", False) else set()
        if set(missing) - tied or unexpected:
            raise UserError(f"{self.base.weights}: weights do not fit the stage's model (missing "
                            f"{sorted(set(missing) - tied)[:3]}, unexpected {sorted(unexpected)[:3]})")


def load_sharded_weights(ckpt: Path, model: Any, info: Any) -> None:
    """Fill `model` (FSDP-sharded or plain, materialised) in place with the model tensors of a sharded
    checkpoint, written by any number of processes (collective under torchrun).

    The target is the model's own state dict: under FSDP this rank's DTensor shards, so DCP reads only the
    byte ranges of the `.distcp` files those shards cover (no rank ever holds the full model); in a plain
    process the full tensors. Only the weights: the stage starts with a fresh optimizer and schedule, as it
    does from a `final/` folder. (Resume-style loading with the optimizer: `sharded.load_sharded`.)
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, set_model_state_dict

    from domainfm.code.train.sharded import MODEL_KEY, single_process_ok

    state = {MODEL_KEY: get_model_state_dict(model)}
    try:
        with single_process_ok():
            dcp.load(state, storage_reader=dcp.FileSystemReader(str(ckpt)), no_dist=not info.distributed)
    except CheckpointException as e:  # raised on every rank alike (the plan is checked centrally)
        cause = next(iter(e.failures.values()), e)  # {rank: (the exception it hit, its traceback)}
        cause = cause[0] if isinstance(cause, tuple) else cause
        raise UserError(f"{ckpt}: its weights do not fit the stage's model "
                        f"({(str(cause).splitlines() or [type(cause).__name__])[0][:200]})") from e
    set_model_state_dict(model, state[MODEL_KEY])


def pretrain_long_context(cfg: LongContextConfig) -> dict[str, Any]:
    """Run (or resume) the long-context stage; returns the run summary (rank 0's view)."""
    base = prepare(cfg)
    return LongContextTrainer(cfg, base).fit()


__all__ = ["LongContextConfig", "RECIPES", "StageSpec", "pretrain_long_context", "find_base", "stage_model_config",
           "rope_theta", "set_rope_theta"]
