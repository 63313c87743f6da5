"""`domainfm pathology pretrain` configuration (one dataclass = the CLI flags = the YAML keys)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class MocoConfig:
    tiles: str = field(default="", metadata={"help": "folder of tile images (any depth) or a tiling output"})
    output: str = field(default="", metadata={"help": "encoder folder to write (checkpoints inside)"})
    backbone: str = field(default="", metadata={
        "help": "torchvision/timm name; empty = resnet50 on GPU, resnet18 on CPU"})
    image_size: int = field(default=96, metadata={"help": "crop size fed to the network (px)"})
    batch_size: int = field(default=64, metadata={"help": "images per step per device"})
    queue_size: int = field(default=65536, metadata={"help": "negatives in the queue (K)"})
    max_steps: int = field(default=0, metadata={"help": "stop after this many steps (0 = --epochs/--max-minutes)"})
    epochs: int = field(default=0, metadata={"help": "passes over the tiles (used when --max-steps is 0)"})
    dim: int = field(default=128, metadata={"help": "projection output size"})
    momentum: float = field(default=0.999, metadata={"help": "key-encoder momentum m"})
    temperature: float = field(default=0.2, metadata={"help": "InfoNCE temperature"})
    lr: float = field(default=0.0, metadata={"help": "base lr; 0 = 0.03 x global batch / 256"})
    weight_decay: float = field(default=1e-4, metadata={"help": "SGD weight decay"})
    sgd_momentum: float = field(default=0.9, metadata={"help": "SGD momentum"})
    warmup_steps: int = field(default=0, metadata={"help": "linear warm-up steps before the cosine decay"})
    bn_splits: int = field(default=0, metadata={
        "help": "single-device shuffled BN: BN sub-batches (0 = auto, sub-batches of 32 like upstream)"})
    augment: str = field(default="histology", metadata={
        "help": "augmentation preset: histology (weak hue, no grayscale, HED jitter, flips, 90-degree "
                "rotations) or mocov2 (the ImageNet recipe of facebookresearch/moco --aug-plus)"})
    # single overrides of the preset (unset = the preset's value)
    crop_scale_min: float | None = field(default=None, metadata={"help": "RandomResizedCrop minimum scale"})
    color_jitter: float | None = field(default=None, metadata={
        "help": "colour-jitter strength s: brightness/contrast/saturation = s, hue = s/4"})
    grayscale_p: float | None = field(default=None, metadata={"help": "random grayscale probability"})
    blur_p: float | None = field(default=None, metadata={"help": "Gaussian blur probability"})
    vflip: bool | None = field(default=None, metadata={"help": "random vertical flips"})
    rot90: bool | None = field(default=None, metadata={"help": "random 90-degree rotations"})
    hed_jitter: float | None = field(default=None, metadata={"help": "HED stain jitter sigma (0 = off)"})
    max_minutes: float = field(default=0.0, metadata={
        "help": "wall-clock training budget: the cosine schedule is planned from the measured step time so "
                "that the run ends after this many minutes with the lr at its end value"})
    cache_dir: str = field(default="", metadata={
        "help": "decoded-tile cache folder (empty = $DOMAINFM_CACHE or ~/.cache/domainfm, then tiles/)"})
    cache_size: int = field(default=0, metadata={"help": "tile size in the cache (0 = the tiles' own size)"})
    channels_last: bool | None = field(default=None, metadata={
        "help": "channels_last memory format (unset = on CUDA only: on CPU NCHW measured ~7% faster, "
                "see docs/ssl_features.md)"})
    val_dir: str = field(default="", metadata={"help": "labelled ImageFolder for a kNN monitor each epoch"})
    val_max: int = field(default=1000, metadata={"help": "images of --val-dir used by the kNN monitor"})
    resume: bool = field(default=False, metadata={"help": "continue from OUTPUT/checkpoints/last.pt"})
    checkpoint_every: int = field(default=200, metadata={"help": "steps between checkpoints"})
    checkpoint_minutes: float = field(default=2.0, metadata={
        "help": "also checkpoint when this much training time passed since the last one (kill -9 safety)"})
    device: str = field(default="", metadata={"help": "cpu, cuda, cuda:1 ... (empty = cuda if available)"})
    workers: int = field(default=0, metadata={"help": "threads decoding tiles into the cache (0 = up to 8)"})
    threads: int = field(default=0, metadata={"help": "torch CPU threads (0 = torch default)"})
    seed: int = field(default=0, metadata={"help": "random seed (init, order, augmentations)"})
