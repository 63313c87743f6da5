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
    max_steps: int = field(default=0, metadata={"help": "stop after this many steps (0 = use --epochs)"})
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
    crop_scale_min: float = field(default=0.2, metadata={"help": "RandomResizedCrop minimum scale"})
    color_jitter: float = field(default=0.4, metadata={"help": "colour-jitter strength (hue = 1/4 of it)"})
    grayscale_p: float = field(default=0.2, metadata={"help": "random grayscale probability"})
    blur_p: float = field(default=0.5, metadata={"help": "Gaussian blur probability"})
    vflip: bool = field(default=True, metadata={"help": "random vertical flips (histology)"})
    rot90: bool = field(default=True, metadata={"help": "random 90-degree rotations (histology)"})
    hed_jitter: float = field(default=0.05, metadata={"help": "HED stain jitter sigma (0 = off)"})
    val_dir: str = field(default="", metadata={"help": "labelled ImageFolder for a kNN monitor each epoch"})
    val_max: int = field(default=1000, metadata={"help": "images of --val-dir used by the kNN monitor"})
    resume: bool = field(default=False, metadata={"help": "continue from OUTPUT/checkpoints/last.pt"})
    checkpoint_every: int = field(default=200, metadata={"help": "steps between checkpoints"})
    device: str = field(default="", metadata={"help": "cpu, cuda, cuda:1 ... (empty = cuda if available)"})
    workers: int = field(default=2, metadata={"help": "DataLoader worker processes"})
    threads: int = field(default=0, metadata={"help": "torch CPU threads (0 = torch default)"})
    seed: int = field(default=0, metadata={"help": "random seed (init, order, augmentations)"})
