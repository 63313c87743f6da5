"""`pretrain(cfg)`: causal-LM pretraining of a StarCoder-family model on packed token shards.

One readable loop (nanoGPT/litgpt style): AdamW (0.9/0.95, wd 0.1 on matrices only), linear warm-up
then cosine decay, gradient accumulation and clipping, bf16 autocast on GPUs, optional activation
checkpointing / torch.compile, DDP or FSDP2 under torchrun. Every `save_every` steps a checkpoint
(model, optimizer, scheduler, RNG states, data position) is written atomically; a rerun of the same
command resumes from it and reproduces the uninterrupted run's loss sequence exactly, because the
data order is a pure function of (seed, step) (see `data.BatchPlan`) and nothing else is random.
"""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path
from typing import Any

from domainfm.code.data.shards import PackedDataset, read_index
from domainfm.code.train.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from domainfm.code.train.config import RESUME_KEYS, PretrainConfig
from domainfm.code.train.data import BatchPlan, StepLoader
from domainfm.code.train.dist import (
    DistInfo,
    all_mean,
    autocast,
    autocast_dtype,
    init_distributed,
    replicas_in_sync,
    unsharded_model,
    wrap_model,
)
from domainfm.core.config import config_to_dict, save_config
from domainfm.core.errors import UserError
from domainfm.core.progress import get_logger, progress

log = get_logger("code.train")


def pretrain(cfg: PretrainConfig) -> dict[str, Any]:
    """Train (or resume) and export OUT/final; returns the run summary (rank 0's view)."""
    return Trainer(cfg).fit()


def lr_factor(step: int, warmup: int, max_steps: int, min_ratio: float) -> float:
    """Multiplier of the peak lr at 0-based `step`: linear warm-up to 1, then cosine down to `min_ratio`."""
    if step < warmup:
        return (step + 1) / warmup
    progress_ = min(1.0, (step - warmup) / max(1, max_steps - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress_))


def model_config_for(preset: str, vocab_size: int) -> Any:
    """A preset name, or a folder / config.json of any transformers causal-LM config."""
    from domainfm.code.model.build import model_config

    p = Path(preset)
    if p.exists():
        from transformers import AutoConfig

        return model_config(AutoConfig.from_pretrained(p.parent if p.is_file() else p), vocab_size)
    return model_config(preset, vocab_size)


class Trainer:
    def __init__(self, cfg: PretrainConfig) -> None:
        self.cfg = cfg

    # ---------------------------------------------------------------- set-up
    def _setup(self) -> None:
        import torch

        cfg = self.cfg
        cfg.validate()
        self.info: DistInfo = init_distributed(cfg.device)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.packed = Path(cfg.data)
        self.index = read_index(self.packed)
        self.train_ds = PackedDataset(self.packed, "train")
        if len(self.train_ds) == 0:
            raise UserError(f"{self.packed}: the train split holds no sequences")
        val_n = self.index["splits"].get("val", {}).get("n_seqs", 0)
        self.val_ds = PackedDataset(self.packed, "val") if val_n else None
        self.seq_len = cfg.seq_len or self.train_ds.seq_len
        if self.seq_len > self.train_ds.seq_len or self.seq_len < 2:
            raise UserError(f"seq_len {self.seq_len}: must be in [2, {self.train_ds.seq_len}] (the packed length)")
        self.vocab = cfg.vocab_size or int(self.index["vocab_size"])
        self.out = Path(cfg.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.ptdtype = autocast_dtype(cfg.dtype, self.info.device)
        self.plan = BatchPlan(len(self.train_ds), cfg.batch_size, cfg.grad_accum, self.info.world_size,
                              self.info.rank, cfg.seed)

        ckpt = latest_checkpoint(self.out)
        if ckpt is not None and cfg.resume is False:
            raise UserError(f"{self.out} already holds checkpoints ({ckpt.name}); resume (the default) or "
                            "choose another --out")
        self.state = load_checkpoint(ckpt) if ckpt is not None and cfg.resume is not False else None
        if self.state is not None:
            self._check_resumable(self.state)
        # sharded (DCP) checkpoints: every rank writes its shards; the default with FSDP (`sharded.py`)
        self.sharded = cfg.fsdp if cfg.sharded_checkpoints is None else cfg.sharded_checkpoints
        from_dcp = self.state is not None and self.state["format"] == "sharded"  # weights come in `_restore`

        from domainfm.code.model.build import build_model

        torch.manual_seed(cfg.seed)  # same initialisation on every process (DDP also broadcasts it)
        self.mcfg = mcfg = model_config_for(cfg.preset, self.vocab)
        mcfg.use_cache = False  # no KV cache while training
        init_from = None
        if cfg.fsdp and self.info.distributed:
            # FSDP: every rank builds on `meta` (no memory); rank 0 also builds the real initialisation on
            # CPU (the same weights a single process would draw) or takes the checkpoint's, and sends each
            # rank its shards (`dist.load_full_state`)
            if self.info.is_main and not from_dcp:
                init_from = build_model(mcfg, device="cpu")  # also the source of the non-persistent buffers
                if self.state is not None:  # (RoPE inv_freq), which no checkpoint holds
                    init_from.load_state_dict(self.state["model"], assign=True)
            self.raw = build_model(mcfg, device="meta")
        else:
            self.raw = build_model(mcfg, device=self.info.device)
            if self.state is not None and not from_dcp:
                self.raw.load_state_dict(self.state["model"])
        if cfg.grad_checkpointing:  # recompute each decoder layer in backward; non-reentrant works with FSDP
            enable = getattr(self.raw, "activation_checkpointing_enable", None)  # transformers >= 5 name
            if enable is not None:
                enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                self.raw.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.wrapped = wrap_model(self.raw, self.info, cfg.fsdp, init_from=init_from, from_checkpoint=from_dcp)
        del init_from
        self.model = torch.compile(self.wrapped, backend=cfg.compile_backend) if cfg.compile else self.wrapped
        if cfg.chunked_loss:  # the same loss without the full-vocabulary logits (train/loss.py); it calls the
            # decoder and the head itself, so only where nothing wraps the model (no DDP/FSDP, no compile)
            from domainfm.code.train.loss import ChunkedLMLoss, supports_chunked_loss

            if self.info.distributed or cfg.compile or not supports_chunked_loss(self.raw):
                raise UserError("--chunked-loss needs one process, no --compile and a model with a linear LM head")
            self.model = ChunkedLMLoss(self.raw)

        # weight decay on matrices only: biases and LayerNorm gains are not decayed (GPT-2/nanoGPT practice)
        params = [p for p in self.raw.parameters() if p.requires_grad]
        groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
                  {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
        # fused AdamW: one kernel per tensor instead of ~10 elementwise passes; on CPU 5-8x less optimizer time
        # than torch's default there (the per-tensor for-loop; benchmarks/bench_train.py, "components").
        # Not for FSDP on CPU: its DTensor shards go through the default path (the fused CPU kernel is
        # untested on them)
        fused = self.info.device.type == "cuda" or (self.info.device.type == "cpu" and not cfg.fsdp)
        self.optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=fused or None)
        warmup = min(cfg.warmup, cfg.max_steps // 10 + 1)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, warmup, cfg.max_steps, cfg.min_lr_ratio))
        self.scaler = torch.amp.GradScaler(self.info.device.type, enabled=self.ptdtype is torch.float16)
        self.step = 0
        if self.state is not None:
            self._restore(self.state)
            if self.info.is_main:
                log.info("resuming from %s (step %d)", ckpt, self.step)
        if self.info.is_main:
            save_config(cfg, self.out / "config.yaml")

    def _check_resumable(self, state: dict[str, Any]) -> None:
        old, new = state["config"], config_to_dict(self.cfg)
        norm = {"data": lambda v: str(Path(v).resolve())}
        batch = ("batch_size", "grad_accum")  # compared as the global batch below
        diff = [k for k in RESUME_KEYS if k not in batch
                and norm.get(k, lambda v: v)(old.get(k)) != norm.get(k, lambda v: v)(new.get(k))]
        # the data order is a function of (seed, step, global batch) only (`data.BatchPlan`): another number
        # of processes is fine when batch_size x grad_accum x processes stays the same
        old_g = old.get("batch_size", 0) * old.get("grad_accum", 0) * state.get("world_size", 1)
        new_g = self.cfg.batch_size * self.cfg.grad_accum * self.info.world_size
        if old_g != new_g:
            diff.append(f"global batch (batch_size x grad_accum x processes: {old_g} -> {new_g})")
        # gathered DDP and FSDP checkpoints key the optimizer apart; sharded ones are the same either way
        if state.get("format") != "sharded" and bool(old.get("fsdp")) != bool(new.get("fsdp")):
            diff.append(f"fsdp ({old.get('fsdp')} -> {new.get('fsdp')})")
        if diff:
            raise UserError(f"{self.out}: cannot resume, the run was started with different {', '.join(diff)}; "
                            "use the same settings or another --out")

    def _restore(self, state: dict[str, Any]) -> None:
        if state["format"] == "sharded":  # every rank reads its own shards (resharded to this world size)
            from domainfm.code.train.sharded import load_sharded

            load_sharded(state["path"], self.raw, self.optimizer, self.info)
        elif self.cfg.fsdp:  # the weights came in with the sharding (`_setup`); the optimizer's state is keyed
            # by parameter name in a gathered checkpoint: each rank keeps its shard of it
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

            set_optimizer_state_dict(self.raw, self.optimizer, state["optimizer"],
                                     options=StateDictOptions(full_state_dict=True))
        else:
            self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        rngs = state["rng"]  # more processes than saved: the new ranks start like rank 0 (as in a fresh run)
        set_rng_state(rngs[self.info.rank] if self.info.rank < len(rngs) else rngs[0])

    # ---------------------------------------------------------------- one step
    def _labels(self, x: Any) -> Any:
        """Targets = inputs (the model shifts them), with the packing pad (`<fim_pad>`, which fills the
        last row of a shard) set to -100 so the model never learns to predict padding."""
        pad = self.train_ds.pad_id
        return x if pad is None else x.masked_fill(x == pad, -100)

    def _train_step(self, batches: list[Any]) -> tuple[float, float]:
        import torch

        self.model.train()
        accum = len(batches)
        total = torch.zeros((), device=self.info.device)
        for m, x in enumerate(batches):  # x: (B, L) token ids; labels = inputs (the model shifts them)
            last = m == accum - 1
            if self.cfg.fsdp:
                self.wrapped.set_requires_gradient_sync(last)
                sync = contextlib.nullcontext()
            else:  # DDP all-reduces gradients only on the last micro-batch
                sync = self.wrapped.no_sync() if self.info.distributed and not last else contextlib.nullcontext()
            with sync:
                with autocast(self.info.device, self.ptdtype):
                    loss = self.model(input_ids=x, labels=self._labels(x)).loss / accum
                self.scaler.scale(loss).backward()
            total += loss.detach()
        self.scaler.unscale_(self.optimizer)
        params = self.raw.parameters()
        if self.cfg.grad_clip > 0:
            gnorm = torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip)
        else:
            gnorm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        gnorm = gnorm.full_tensor() if hasattr(gnorm, "full_tensor") else gnorm
        return float(total), float(gnorm)

    def evaluate(self) -> float | None:
        """Mean loss over the first sequences of the val split (the same ones every time), all processes."""
        import torch

        if self.val_ds is None:
            return None
        W, B = self.info.world_size, self.cfg.batch_size
        per_rank = min(len(self.val_ds) // W, self.cfg.eval_batches * B)
        if per_rank == 0:
            return None
        start = self.info.rank * per_rank
        # eager even under --compile: a second (eval-mode, no-grad) graph would double the compile time
        # for a few batches
        model = self.wrapped
        model.eval()
        tot, n = 0.0, 0
        with torch.no_grad(), autocast(self.info.device, self.ptdtype):
            for i in range(start, start + per_rank, B):
                idx = range(i, min(i + B, start + per_rank))
                x = torch.stack([torch.from_numpy(self.val_ds[j][: self.seq_len]) for j in idx]).to(self.info.device)
                tot += float(model(input_ids=x, labels=self._labels(x)).loss) * len(idx)
                n += len(idx)
        return all_mean([tot / n], self.info)[0]

    # ---------------------------------------------------------------- checkpoints
    def _gather_state(self) -> dict[str, Any] | None:
        """The checkpoint dict on rank 0 (collective: every process must call it)."""
        import torch.distributed as dist

        rngs = [rng_state()]
        if self.info.distributed:
            rngs = [None] * self.info.world_size
            dist.all_gather_object(rngs, rng_state())
        if self.sharded:  # weights and optimizer go into the DCP folder, each rank its shards (`save`)
            model_sd = optim_sd = None
        elif self.cfg.fsdp:
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                get_model_state_dict,
                get_optimizer_state_dict,
            )

            opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
            model_sd = get_model_state_dict(self.raw, options=opts)
            optim_sd = get_optimizer_state_dict(self.raw, self.optimizer, options=opts)
        else:
            model_sd, optim_sd = self.raw.state_dict(), self.optimizer.state_dict()
        if not self.info.is_main:
            return None
        state = {"model": model_sd, "optimizer": optim_sd, "scheduler": self.scheduler.state_dict(),
                 "scaler": self.scaler.state_dict(), "step": self.step, "rng": rngs,
                 "data_position": self.plan.position(self.step), "world_size": self.info.world_size,
                 "config": config_to_dict(self.cfg)}
        return {k: v for k, v in state.items() if v is not None}

    def save(self) -> None:
        if self.info.distributed and not self.cfg.fsdp and not replicas_in_sync(self.raw, self.info):
            raise RuntimeError(f"step {self.step}: DDP replicas diverged (parameters differ between processes)")
        state = self._gather_state()
        if self.sharded:
            from domainfm.code.train.sharded import save_sharded

            save_sharded(self.out, self.step, self.raw, self.optimizer, state, self.info,
                         keep=self.cfg.keep_checkpoints, model_config=self.mcfg)
        elif state is not None:
            save_checkpoint(self.out, self.step, state, keep=self.cfg.keep_checkpoints)
        if self.info.distributed:
            import torch.distributed as dist

            dist.barrier()

    # ---------------------------------------------------------------- the loop
    def fit(self) -> dict[str, Any]:
        from domainfm.code.train.dist import shutdown_distributed

        try:
            self._setup()
            return self._fit()
        finally:
            shutdown_distributed()

    def _fit(self) -> dict[str, Any]:
        from domainfm.code.train.metrics import MetricsLog, plot_loss

        cfg, main = self.cfg, self.info.is_main
        tokens_per_step = self.plan.global_batch * self.seq_len
        metrics = MetricsLog(self.out, self.step, cfg.tensorboard and main) if main else None
        loader = StepLoader(self.train_ds, self.plan, self.seq_len, self.info.device)
        bar = progress(total=cfg.max_steps, desc="pretrain", unit="step") if main else None
        if bar is not None:
            bar.update(self.step)
        t0 = time.perf_counter()
        t_last, tok_last = t0, self.step * tokens_per_step
        loss = val_loss = None
        try:
            while self.step < cfg.max_steps:
                lr_used = self.optimizer.param_groups[0]["lr"]  # this step's lr (the scheduler moves it after)
                loss, gnorm = self._train_step(loader.get(self.step))
                self.step += 1
                last = self.step == cfg.max_steps
                do_eval = last or (cfg.eval_every and self.step % cfg.eval_every == 0)
                val_loss = self.evaluate() if do_eval else None
                if last or do_eval or self.step % cfg.log_every == 0:
                    (loss,) = all_mean([loss], self.info)
                    now, tokens = time.perf_counter(), self.step * tokens_per_step
                    row = {"step": self.step, "loss": loss, "lr": lr_used, "tokens": tokens, "grad_norm": gnorm,
                           "tokens_per_s": (tokens - tok_last) / max(now - t_last, 1e-9),
                           "elapsed_s": now - t0}
                    if val_loss is not None:
                        row["val_loss"] = val_loss
                    t_last, tok_last = now, tokens
                    if metrics is not None:
                        metrics.log(row)
                    if bar is not None:
                        bar.set_postfix_str(f"loss {loss:.3f} {row['tokens_per_s']:,.0f} tok/s"
                                            + (f" val {val_loss:.3f}" if val_loss is not None else ""))
                if bar is not None:
                    bar.update(1)
                if last or (cfg.save_every and self.step % cfg.save_every == 0):
                    self.save()
        finally:
            loader.close()
            if bar is not None:
                bar.close()
            if metrics is not None:
                metrics.close()
        return self._finish(time.perf_counter() - t0, plot_loss)

    def _finish(self, wall: float, plot_loss: Any) -> dict[str, Any]:
        from domainfm.code.train.export import export_final
        from domainfm.code.train.metrics import read_metrics

        full_sd = None
        streamed = self.cfg.fsdp and self.sharded  # final/ streamed from the last (sharded) checkpoint
        if self.cfg.fsdp and not streamed:  # collective: gather the sharded weights for save_pretrained on rank 0
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

            full_sd = get_model_state_dict(self.raw, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if not self.info.is_main:
            return {}
        rows = read_metrics(self.out / "metrics.jsonl")
        vals = [r["val_loss"] for r in rows if r.get("val_loss") is not None]
        seen = self.plan.position(self.step)["sequences_seen"]
        summary = {
            "steps": self.step, "tokens_seen": self.step * self.plan.global_batch * self.seq_len,
            "sequences_seen": seen, "epochs": seen / len(self.train_ds),
            "final_loss": rows[-1]["loss"] if rows else None, "final_val_loss": vals[-1] if vals else None,
            "world_size": self.info.world_size,
            "parallelism": "FSDP" if self.cfg.fsdp else ("DDP" if self.info.distributed else "single process"),
            "device": str(self.info.device), "precision": str(self.ptdtype or "fp32").replace("torch.", ""),
            "wall_s": wall, "out": str(self.out),
        }
        png = plot_loss(self.out / "metrics.jsonl", self.out / "loss.png", title=f"{self.cfg.preset} pretraining")
        # FSDP: export an ordinary (unsharded) model holding the gathered weights, so the folder is the same
        # as a single process's (class name, tied embedding stored once)
        model = unsharded_model(self.mcfg, full_sd) if full_sd is not None else self.raw
        weights_from = None
        if streamed:  # no gather: rank 0 converts the DCP folder tensor by tensor (`dcp_export`)
            from domainfm.code.model.build import build_model

            model, weights_from = build_model(self.mcfg, device="meta"), latest_checkpoint(self.out)
        final = export_final(model, self.out, packed_dir=self.packed, index=self.index,
                             cfg=config_to_dict(self.cfg), summary=summary, weights_from=weights_from)
        summary.update(final=str(final), loss_png=str(png))
        return summary
