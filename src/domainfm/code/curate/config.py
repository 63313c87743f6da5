"""The curation config: one typed dataclass shared by the CLI, YAML files and the Python API."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class CurateConfig:
    sources: list[str] = field(default_factory=list, metadata={"help": "directories of repos, repos, git repos, archives"})
    out: str = field(default="", metadata={"help": "output folder"})
    workers: int = field(default=1, metadata={"help": "worker processes (ray: CPUs of the local instance)"})
    executor: str = field(default="local", metadata={"help": "local | ray (see docs/scale.md)"})
    ray_address: str = field(default="", metadata={"help": "--executor ray: join this cluster (HOST:PORT, auto)"})
    ray_dedup: str = field(default="auto", metadata={
        "help": "--executor ray, global dedup: task (one Ray task, the local algorithm) | data (Ray Data "
                "shuffles, no process holds the corpus) | auto (task while its memory fits --ray-dedup-task-mb)"})
    ray_dedup_task_mb: int = field(default=4096, metadata={
        "help": "--ray-dedup auto: largest estimated memory of the one-task global dedup (MiB)"})
    layout: str = field(default="auto", metadata={"help": "auto | repo (each SRC is one repo) | repos (SRC holds repos)"})
    max_file_size: int = field(default=1_000_000, metadata={"help": "drop files larger than this many bytes"})
    license_types: list[str] = field(default_factory=lambda: ["permissive", "no_license"],
                                     metadata={"help": "license types kept"})
    opt_out: str = field(default="", metadata={"help": "opt-out file: lines 'owner' or 'owner/repo'"})
    languages: list[str] = field(default_factory=list, metadata={"help": "keep only these languages (default all known)"})
    quality: bool = field(default=True, metadata={"help": "apply the StarCoder quality filters"})
    notebooks: bool = field(default=True, metadata={
        "help": "turn .ipynb into The Stack v2's script and structured notebook records"})
    github_dir: str = field(default=".github-api", metadata={
        "help": "top-level folder of each repo holding GitHub API issue/PR JSON ('' = none); see docs/curate_sources.md"})
    near_dedup: bool = field(default=True, metadata={"help": "MinHash near-deduplication"})
    num_perm: int = field(default=256, metadata={"help": "MinHash permutations"})
    ngram: int = field(default=5, metadata={"help": "tokens per shingle"})
    bands: int = field(default=25, metadata={"help": "LSH bands"})
    rows: int = field(default=10, metadata={"help": "LSH rows per band"})
    lsh_rounds: int = field(default=3, metadata={"help": "LSH bandings of the same signatures (1 = classic LSH)"})
    verify_jaccard: float = field(default=0.65, metadata={
        "help": "keep an LSH candidate pair only if its MinHash Jaccard estimate is >= this (0 = off)"})
    pii: bool = field(default=True, metadata={"help": "redact emails, IPs, keys and passwords"})
    humaneval: bool = field(default=True, metadata={"help": "decontaminate against HumanEval"})
    mbpp: str = field(default="", metadata={"help": "MBPP jsonl (default $DOMAINFM_DATA/code/mbpp/mbpp.jsonl; 'none' to skip)"})
    decontaminate: list[str] = field(default_factory=list, metadata={"help": "extra JSONL files of benchmark texts"})
    decontaminate_field: str = field(default="text", metadata={"help": "text field of --decontaminate files"})
    decontam_min_chars: int = field(default=40, metadata={"help": "ignore benchmark texts shorter than this"})
    decontam_benchmarks: list[str] = field(default_factory=lambda: ["all"], metadata={
        "help": "harness benchmarks read from $DOMAINFM_DATA (all | none | humaneval_plus mbpp_sanitized mbpp_plus "
                "multipl_e humaneval_infilling cruxeval gsm8k)"})
    license_detector: str = field(default="rules", metadata={
        "help": "license text detector: rules | scancode (pip install 'domainfm[licenses]')"})
    pii_model: str = field(default="", metadata={
        "help": "local token-classification model folder (StarPII-style) to redact names; never downloads"})
    files_per_shard: int = field(default=2000, metadata={"help": "files per shard (resumable unit)"})
    keep_work: bool = field(default=False, metadata={"help": "keep intermediate shards under OUT/.work"})

    def fingerprint_dict(self) -> dict:
        """What decides the output (workers and bookkeeping flags excluded)."""
        from domainfm.core.config import config_to_dict

        d = config_to_dict(self)
        for k in ("workers", "executor", "ray_address", "ray_dedup", "ray_dedup_task_mb", "keep_work", "out"):
            d.pop(k, None)
        return d
