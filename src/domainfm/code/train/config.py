"""`PretrainConfig`: every key is at once a YAML key and a `domainfm code pretrain --flag`."""

from __future__ import annotations

from dataclasses import dataclass, field

from domainfm.core.errors import UserError

# keys that change the loss sequence: a resumed run must use the same values as the run it continues
RESUME_KEYS = ("data", "preset", "seq_len", "batch_size", "grad_accum", "lr", "min_lr_ratio", "warmup",
               "weight_decay", "beta1", "beta2", "grad_clip", "seed", "max_steps", "dtype", "vocab_size")


@dataclass
class PretrainConfig:
    data: str = field(default="", metadata={"help": "packed token shards (`domainfm code pack` output)"})
    out: str = field(default="runs/pretrain", metadata={"help": "output folder (checkpoints, metrics, final/)"})
    preset: str = field(default="tiny", metadata={"help": "model preset (`domainfm code presets`)"})
    vocab_size: int = field(default=0, metadata={"help": "embedding size; 0 = the packed data's vocabulary"})
    seq_len: int = field(default=0, metadata={"help": "tokens per sequence; 0 = the packed length "
                                              "(a shorter value uses the first seq_len tokens of each row)"})
    batch_size: int = field(default=8, metadata={"help": "sequences per micro-batch per process"})
    grad_accum: int = field(default=1, metadata={"help": "micro-batches accumulated per optimizer step"})
    lr: float = field(default=3e-4, metadata={"help": "peak learning rate"})
    min_lr_ratio: float = field(default=0.1, metadata={"help": "final lr of the cosine decay, as a fraction of lr"})
    warmup: int = field(default=100, metadata={"help": "linear warm-up steps (capped at max_steps // 10 + 1)"})
    max_steps: int = field(default=1000, metadata={"help": "optimizer steps"})
    weight_decay: float = field(default=0.1, metadata={"help": "AdamW weight decay (not on biases/norms)"})
    beta1: float = field(default=0.9, metadata={"help": "AdamW beta1"})
    beta2: float = field(default=0.95, metadata={"help": "AdamW beta2"})
    grad_clip: float = field(default=1.0, metadata={"help": "max gradient norm (0 = off)"})
    seed: int = field(default=0, metadata={"help": "seed of the initialisation and the data order"})
    save_every: int = field(default=200, metadata={"help": "checkpoint every N steps (0 = only at the end)"})
    keep_checkpoints: int = field(default=2, metadata={"help": "checkpoints kept (oldest deleted)"})
    eval_every: int = field(default=100, metadata={"help": "validation loss every N steps (0 = only at the end)"})
    eval_batches: int = field(default=8, metadata={"help": "micro-batches of the val split per evaluation"})
    log_every: int = field(default=1, metadata={"help": "a metrics.jsonl line every N steps"})
    device: str = field(default="auto", metadata={"help": "auto | cpu | cuda | cuda:N | mps"})
    dtype: str = field(default="auto", metadata={"help": "autocast dtype: auto (bf16 on GPU, fp32 on CPU) | "
                                                 "bf16 | fp16 | fp32"})
    compile: bool = field(default=False, metadata={"help": "torch.compile the model"})
    compile_backend: str = field(default="inductor", metadata={
        "help": "torch.compile backend (inductor = generated kernels; aot_eager = graph capture only)"})
    grad_checkpointing: bool = field(default=False, metadata={"help": "activation checkpointing (less memory)"})
    fsdp: bool = field(default=False, metadata={"help": "shard params/grads/optimizer over processes (FSDP2) "
                                                "instead of DDP, for models that do not fit one device"})
    sharded_checkpoints: bool | None = field(default=None, metadata={
        "help": "checkpoints as torch.distributed.checkpoint folders every process writes its shards into "
                "(resumable on another number of processes); default: on with --fsdp"})
    threads: int = field(default=0, metadata={"help": "CPU threads per process (0 = torch's default)"})
    chunked_loss: bool = field(default=False, metadata={
        "help": "LM head + cross-entropy a chunk of tokens at a time, never the full (tokens, vocab) logits "
                "(less memory, ~9% less CPU time on tiny's head); one process, no --compile"})
    tensorboard: bool = field(default=True, metadata={"help": "write TensorBoard events under OUT/tb"})
    resume: bool | None = field(default=None, metadata={"help": "continue from OUT's last checkpoint "
                                                        "(default: resume when one exists)"})

    def validate(self) -> None:
        if not self.data:
            raise UserError("no training data: give --data PACKED_DIR (written by `domainfm code pack`)")
        for name in ("batch_size", "grad_accum", "max_steps", "log_every", "eval_batches", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup", "save_every", "eval_every", "seq_len", "vocab_size", "threads"):
            if getattr(self, name) < 0:
                raise UserError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.lr <= 0:
            raise UserError(f"lr must be positive, got {self.lr}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise UserError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.dtype not in ("auto", "bf16", "fp16", "fp32"):
            raise UserError(f"dtype must be auto, bf16, fp16 or fp32, got {self.dtype!r}")
