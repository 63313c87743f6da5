"""Everything that needs a GPU, in one prepared run: `prepare` here, `run` on the GPU machine.

    python scripts/gpu_check.py prepare -o BUNDLE          # here: code + wheels + a packed PCam subset (<= 64 MiB)
    python scripts/gpu_check.py run BUNDLE -o OUT           # there: no network, no .venv needed
    python scripts/gpu_check.py all -o OUT [--smoke]        # both (what `make gpu-check [ARGS=--smoke]` runs)

The GPU machine needs only Python with PyTorch (>= 2.4, with torchvision), transformers, timm, h5py,
scikit-learn and pyarrow; the pure-Python packages it may lack (lightly and its small dependencies,
pytest, typer, ...) travel as wheels in BUNDLE/wheels and are unzipped into OUT/site, placed *after* the
installed packages on sys.path (what is installed wins). The PCam subset travels as the original JPEG
bytes (no re-encoding) in one .npz: a seeded, class-balanced draw from $DOMAINFM_DATA/pathology/pcam.

`run` writes OUT/gpu_check.json and OUT/gpu_check.md, one section each (a failing section is recorded
with its error and the others still run):
1. `mfu`: bf16 MFU of the >= 100M-parameter code preset `base` (113M), our training loop without and
   with `--compile`, beside the bare transformers step (benchmarks/bench_train.py's functions and peak).
2. `moco_vs_lightly`: MoCo v2 step images/s, ours vs lightly with its SplitBatchNorm (resnet50, 224 px,
   batch 256; benchmarks/bench_moco.py's step-alone comparison).
3. `thesis`: MoCo pretraining on the packed PCam subset for fixed minutes, then the linear probe and the
   PCam-bags table vs random init (benchmarks/thesis_pathology.py's `run`).
4. `tests`: the tests that skip without CUDA (`pytest -m gpu`: one-GPU MoCo run + resume, channels_last,
   bf16 autocast).
Budget on one H200 (estimated, not yet run on one): about 1.5 (MFU, incl. inductor compile) + 1 (MoCo vs
lightly) + 2.5 (MoCo) + 1.5 (probe + MIL table) + 0.5 (tests) minutes, <= 8. `--smoke` runs the same path on the CPU at
toy sizes in well under a minute (a test in the suite runs it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import traceback
import zipfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MAX_BUNDLE = 64 * 2**20
# pure-Python wheels the GPU machine may lack (py3-none-any; what is installed there wins)
WHEELS = ["lightly", "lightning-utilities", "pytest", "pluggy", "iniconfig", "typer", "click", "rich",
          "shellingham", "markdown-it-py", "mdurl", "pygments", "nystrom-attention", "einops"]
CODE = ["src/domainfm", "benchmarks/bench_train.py", "benchmarks/bench_moco.py", "benchmarks/thesis_pathology.py",
        "tests/pathology/ssl", "scripts/gpu_check.py", "pyproject.toml"]


# ------------------------------------------------------------------------------------------------ prepare

def pack_pcam(pcam: Path, out: Path, n_train: int, n_valid: int, seed: int = 0) -> dict[str, int]:
    """A class-balanced seeded subset of PCam train/valid as raw JPEG bytes in one .npz."""
    import numpy as np

    rng = np.random.default_rng(seed)
    blobs, offsets, labels, splits, names = [], [0], [], [], []
    for split, n in (("train", n_train), ("valid", n_valid)):
        for cls in ("0", "1"):
            files = sorted((pcam / split / cls).glob("*.jpg"))
            if not files:
                raise SystemExit(f"{pcam / split / cls}: no PCam JPEGs")
            pick = np.sort(rng.permutation(len(files))[: n // 2])
            for i in pick:
                b = files[i].read_bytes()
                blobs.append(b)
                offsets.append(offsets[-1] + len(b))
                labels.append(int(cls))
                splits.append(0 if split == "train" else 1)
                names.append(files[i].name)
    np.savez(out, data=np.frombuffer(b"".join(blobs), dtype=np.uint8), offsets=np.asarray(offsets, np.int64),
             labels=np.asarray(labels, np.int8), splits=np.asarray(splits, np.int8), names=np.asarray(names))
    return {"train": int(sum(s == 0 for s in splits)), "valid": int(sum(s == 1 for s in splits))}


def unpack_pcam(npz: Path, out: Path) -> Path:
    """The .npz back into an ImageFolder OUT/{train,valid}/{0,1}/*.jpg (byte-identical JPEGs)."""
    import numpy as np

    if (out / ".done").is_file():
        return out
    z = np.load(npz)
    data, off = z["data"], z["offsets"]
    for i, (lab, sp, name) in enumerate(zip(z["labels"], z["splits"], z["names"], strict=True)):
        d = out / ("train" if sp == 0 else "valid") / str(int(lab))
        d.mkdir(parents=True, exist_ok=True)
        (d / str(name)).write_bytes(data[off[i]:off[i + 1]].tobytes())
    (out / ".done").write_text("ok\n")
    return out


def download_wheels(dest: Path) -> list[str]:
    """Pure-Python wheels of WHEELS at the versions installed here (pip download, the ordinary client)."""
    from importlib.metadata import PackageNotFoundError, version

    dest.mkdir(parents=True, exist_ok=True)
    specs = []
    for name in WHEELS:
        try:
            specs.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            specs.append(name)
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                    "-d", str(dest), *specs], check=True)
    for whl in dest.glob("*.whl"):  # only pure-Python wheels run on any GPU machine
        if not whl.name.endswith("-none-any.whl"):
            print(f"dropping platform wheel {whl.name}", file=sys.stderr)
            whl.unlink()
    return sorted(p.name for p in dest.glob("*.whl"))


def _dir_size(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def prepare(out: Path, smoke: bool, wheels: bool, n_train: int, n_valid: int) -> dict[str, Any]:
    data = os.environ.get("DOMAINFM_DATA")
    if not data or not (Path(data) / "pathology" / "pcam").is_dir():
        raise SystemExit("prepare needs $DOMAINFM_DATA/pathology/pcam")
    if out.exists():
        shutil.rmtree(out)
    code = out / "code"
    for rel in CODE:
        src = ROOT / rel
        if src.is_dir():
            shutil.copytree(src, code / rel, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            (code / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, code / rel)
    if smoke:
        n_train, n_valid = min(n_train, 96), min(n_valid, 48)
    counts = pack_pcam(Path(data) / "pathology" / "pcam", out / "pcam_subset.npz", n_train, n_valid)
    whl = download_wheels(out / "wheels") if wheels else []
    size = _dir_size(out)
    manifest = {"pcam": counts, "wheels": whl, "bytes": size, "smoke": smoke}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    if size > MAX_BUNDLE:
        raise SystemExit(f"bundle is {size / 2**20:.1f} MiB > 64 MiB: lower --n-train/--n-valid")
    print(f"bundle {out}: {size / 2**20:.1f} MiB ({counts['train']} train + {counts['valid']} valid PCam "
          f"patches, {len(whl)} wheels)", flush=True)
    return manifest


# ---------------------------------------------------------------------------------------------------- run

def _setup_paths(bundle: Path, out: Path) -> Path:
    """Bundle code first on sys.path; wheels unzipped into OUT/site, appended (installed packages win)."""
    code = bundle / "code"
    for p in (code / "src", code / "benchmarks"):
        if str(p) not in sys.path:
            sys.path.insert(0, str(p))
    site = out / "site"
    for whl in sorted((bundle / "wheels").glob("*.whl")):
        with zipfile.ZipFile(whl) as z:
            z.extractall(site)
    if site.is_dir() and str(site) not in sys.path:
        sys.path.append(str(site))
    return site


def section(results: dict[str, Any], name: str, fn: Any, *args: Any) -> None:
    t0 = time.perf_counter()
    print(f"== {name}", flush=True)
    try:
        results[name] = {"status": "ok", **fn(*args)}
    except Exception as exc:  # noqa: BLE001 - one failing section must not hide the others
        results[name] = {"status": "error", "error": f"{type(exc).__name__}: {exc}",
                         "traceback": traceback.format_exc(limit=6)}
        print(f"   failed: {type(exc).__name__}: {exc}", flush=True)
    results[name]["seconds"] = round(time.perf_counter() - t0, 1)


def mfu_section(device: str, smoke: bool, tmp: Path) -> dict[str, Any]:
    import dataclasses
    import json as _json
    import statistics

    import torch

    from bench_train import bare_step_tps, matmul_peak, write_packed
    from domainfm.code.model import build_model
    from domainfm.code.model.build import flops_params
    from domainfm.code.train.config import PretrainConfig
    from domainfm.code.train.trainer import pretrain

    dev = torch.device(device)
    gpu = dev.type == "cuda"
    preset, vocab = ("tiny", 512) if smoke else ("base", 49152)
    seq, batch, steps, warmup = (32, 2, 2, 1) if smoke else (2048, 16, 8, 3)
    dtype = torch.bfloat16 if gpu else None
    peak = max(matmul_peak(dev, torch.bfloat16 if gpu else torch.float32, 1024 if smoke else 8192) for _ in range(2))
    n = flops_params(build_model(preset, vocab_size=vocab, device="meta"))
    packed = write_packed(tmp / "packed", vocab, seq, n_seqs=max(64, batch * (steps + warmup + 2)))
    bare = bare_step_tps(preset, vocab, dev, batch, seq, steps, warmup, dtype)
    res: dict[str, Any] = {"preset": preset, "params_6n": n, "peak_flops": peak, "seq_len": seq, "batch": batch,
                           "precision": "bf16 autocast" if gpu else "fp32", "bare_tps": bare,
                           "bare_mfu": 6 * n * bare / peak}
    for compiled in (False, True):
        cfg = PretrainConfig(data=str(packed), out=str(tmp / f"run-{compiled}"), preset=preset, batch_size=batch,
                             seq_len=seq, max_steps=warmup + steps, warmup=1, save_every=0, eval_every=0,
                             tensorboard=False, device=dev.type, resume=False)
        if compiled:
            # inductor on the GPU (the real figure); graph capture only on the CPU smoke (no C++ build)
            cfg = dataclasses.replace(cfg, compile=True, compile_backend="inductor" if gpu else "aot_eager")
        pretrain(cfg)
        rows = [_json.loads(line) for line in (tmp / f"run-{compiled}" / "metrics.jsonl").read_text().splitlines()]
        tps = statistics.median(r["tokens_per_s"] for r in (rows[warmup:-1] or rows))
        key = "compile" if compiled else "eager"
        res[f"ours_{key}_tps"], res[f"ours_{key}_mfu"] = tps, 6 * n * tps / peak
    return res


def moco_section(device: str, smoke: bool) -> dict[str, Any]:
    import statistics

    from bench_moco import step_flops, time_step_alone

    args = argparse.Namespace(backbone="resnet18" if smoke else "resnet50", image_size=32 if smoke else 224,
                              batch_size=16 if smoke else 256, queue_size=256 if smoke else 65536,
                              steps=1 if smoke else 5, warmup=1 if smoke else 3, repeats=1 if smoke else 3,
                              device=device, skip_other_layout=smoke)
    rates = time_step_alone(args)
    med = {k: statistics.median(v) for k, v in rates.items()}
    flops = step_flops(args)
    return {"config": {k: v for k, v in vars(args).items()}, "img_s": med, "repeats": rates,
            "ratio_ours_lightly": med["ours"] / med["lightly"], "step_gflop": flops / 1e9,
            "ours_tflops": med["ours"] / args.batch_size * flops / 1e12}


def thesis_section(device: str, smoke: bool, pcam: Path, out: Path, minutes: float) -> dict[str, Any]:
    import thesis_pathology as tp

    args = tp.parser().parse_args([])
    args.pcam, args.out, args.device = pcam, out / "thesis", device
    args.budget_min = minutes
    if smoke:
        args.backbone, args.image_size, args.batch_size, args.queue_size = "resnet18", 32, 16, 64
        args.probe_train_per_class, args.probe_test_per_class = 48, 24
        # the packed smoke subset holds 48 + 48 train and 24 + 24 valid patches: bags of 4 fit in it
        args.models, args.n_bags, args.ext_bags, args.bag_size = "meanpool", 8, 4, 4
        args.folds, args.inner_folds, args.epochs, args.n_boot, args.workers = 2, 0, 2, 20, 0
    else:
        args.backbone, args.image_size, args.batch_size, args.queue_size = "resnet50", 96, 256, 2048
        args.probe_train_per_class, args.probe_test_per_class = 0, 0  # the whole packed subset
        args.n_bags, args.ext_bags, args.bag_size, args.epochs, args.n_boot = 60, 24, 24, 20, 500
        args.folds, args.inner_folds = 3, 0  # 5 aggregators x 2 encoders x 3 folds fit the 8-minute budget
    summary = tp.run(args)
    return {"pretrain": summary["pretrain"], "probe": summary["probe"], "bags": summary["bags"],
            "table_md": (out / "thesis" / "table.md").read_text()}


def tests_section(bundle: Path, site: Path, smoke: bool) -> dict[str, Any]:
    env = dict(os.environ)
    code = bundle / "code"
    env["PYTHONPATH"] = os.pathsep.join([str(code / "src"), env.get("PYTHONPATH", ""), str(site)])
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", "--rootdir", str(code),
           "-c", str(code / "pyproject.toml"), str(code / "tests")]
    p = subprocess.run(cmd, cwd=code, env=env, capture_output=True, text=True, timeout=300)
    tail = (p.stdout + p.stderr).strip().splitlines()[-15:]
    # exit 5 = no test selected/ran (all skipped counts as success)
    return {"returncode": p.returncode, "passed": p.returncode in (0, 5), "tail": tail}


def run(bundle: Path, out: Path, smoke: bool, device: str, minutes: float) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    site = _setup_paths(bundle, out)
    os.environ.setdefault("DOMAINFM_PROGRESS", "0")
    os.environ["DOMAINFM_CACHE"] = str(out / "cache")
    import platform

    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    results: dict[str, Any] = {"env": {
        "device": device, "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__, "python": platform.python_version(), "cpus": os.cpu_count(),
        "smoke": smoke, "bundle": json.loads((bundle / "manifest.json").read_text())}}
    t0 = time.perf_counter()
    pcam = unpack_pcam(bundle / "pcam_subset.npz", out / "pcam")
    section(results, "mfu", mfu_section, device, smoke, out / "mfu")
    section(results, "moco_vs_lightly", moco_section, device, smoke)
    section(results, "thesis", thesis_section, device, smoke, pcam, out, minutes)
    section(results, "tests", tests_section, bundle, site, smoke)
    results["total_seconds"] = round(time.perf_counter() - t0, 1)
    (out / "gpu_check.json").write_text(json.dumps(results, indent=1, default=str))
    (out / "gpu_check.md").write_text(markdown(results))
    print(markdown(results), flush=True)
    return results


def markdown(r: dict[str, Any]) -> str:
    env = r["env"]
    lines = [f"# gpu-check ({'smoke, ' if env['smoke'] else ''}{env['device']}: {env['gpu'] or 'no GPU'}, "
             f"torch {env['torch']})", "", f"total {r.get('total_seconds')} s", ""]
    m = r.get("mfu", {})
    if m.get("status") == "ok":
        lines += ["## MFU (code preset)", "", "| preset | 6N | precision | bare MFU | ours MFU | ours MFU --compile |",
                  "|---|---|---|---|---|---|",
                  f"| {m['preset']} | {m['params_6n'] / 1e6:.0f}M | {m['precision']} | {m['bare_mfu']:.1%} | "
                  f"{m['ours_eager_mfu']:.1%} | {m['ours_compile_mfu']:.1%} |", ""]
    mo = r.get("moco_vs_lightly", {})
    if mo.get("status") == "ok":
        c = mo["config"]
        lines += [f"## MoCo v2 step ({c['backbone']}, {c['image_size']} px, batch {c['batch_size']})", "",
                  f"ours {mo['img_s']['ours']:.1f} img/s, lightly {mo['img_s']['lightly']:.1f} img/s, "
                  f"ratio {mo['ratio_ours_lightly']:.2f}x; ours {mo['ours_tflops']:.2f} TFLOP/s", ""]
    t = r.get("thesis", {})
    if t.get("status") == "ok":
        lines += ["## MoCo on the packed PCam subset, probe and PCam-bags", "", t["table_md"]]
    ts = r.get("tests", {})
    if ts.get("status") == "ok":
        lines += ["## GPU tests (pytest -m gpu)", "", f"exit {ts['returncode']}: " + (ts["tail"][-1] if ts["tail"] else ""), ""]
    for k in ("mfu", "moco_vs_lightly", "thesis", "tests"):
        if r.get(k, {}).get("status") == "error":
            lines += [f"**{k} failed**: {r[k]['error']}", ""]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("prepare", "run", "all"):
        p = sub.add_parser(name)
        if name == "run":
            p.add_argument("bundle", type=Path)
        p.add_argument("-o", "--out", type=Path, required=True)
        p.add_argument("--smoke", action="store_true", help="CPU, toy sizes, no wheel download")
        if name != "run":
            p.add_argument("--n-train", type=int, default=4000, help="packed PCam train patches")
            p.add_argument("--n-valid", type=int, default=1500, help="packed PCam valid patches")
            p.add_argument("--no-wheels", action="store_true", help="do not download wheels")
        if name != "prepare":
            p.add_argument("--device", default="", help="default: cuda if available (--smoke: cpu)")
            p.add_argument("--minutes", type=float, default=2.5, help="MoCo pretraining minutes")
    a = ap.parse_args(argv)
    if a.cmd in ("prepare", "all"):
        bundle = a.out if a.cmd == "prepare" else a.out / "bundle"
        prepare(bundle, a.smoke, wheels=not (a.no_wheels or a.smoke), n_train=a.n_train, n_valid=a.n_valid)
    if a.cmd in ("run", "all"):
        bundle = a.bundle if a.cmd == "run" else a.out / "bundle"
        device = "cpu" if a.smoke and not a.device else a.device
        minutes = min(a.minutes, 0.05) if a.smoke else a.minutes
        res = run(bundle, a.out if a.cmd == "run" else a.out / "result", a.smoke, device, minutes)
        failed = [k for k in ("mfu", "moco_vs_lightly", "thesis", "tests") if res[k]["status"] != "ok"
                  or (k == "tests" and not res[k].get("passed"))]
        if failed:
            print(f"failed sections: {', '.join(failed)}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
