"""Feature extraction: tiles -> (N, D) embeddings in HDF5, batched through a DataLoader.

* `extract_image_folder`: an ImageFolder tree (``root/<class>/**/*.jpg``) -> one ``features.h5`` with
  ``features`` (N, D), ``labels`` (N,) = class index in sorted folder-name order, ``paths`` (N,)
  relative to the root, and the attribute ``classes``.
* `extract_slide_features`: one coords file (ours, CLAM's or TRIDENT's) -> ``features`` (N, D) +
  ``coords`` (N, 2), tiles re-read with `domainfm.pathology.slides.read_tiles` exactly as the coords file
  defines them. The coords dataset keeps the coords file's attributes (as TRIDENT's own feature files do),
  so CLAM's and TRIDENT's loaders read our feature files; ``layout="clam"`` writes CLAM's
  ``h5_files/<id>.h5`` + ``pt_files/<id>.pt`` pair instead (see `features.interop`).
* `extract_tiles_dir`: every slide of a tiling output; finished slides are skipped (resumable per slide).

Every file is written to a temporary name and renamed, so a killed run never leaves a partial file.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from domainfm.core.errors import UserError
from domainfm.core.progress import get_logger, progress
from domainfm.pathology.ssl.data import IMAGE_SUFFIXES

log = get_logger("pathology.features")


def list_image_folder(root: str | Path) -> tuple[list[Path], np.ndarray, list[str]]:
    """ImageFolder listing: (files, labels (N,), classes) with classes = sorted sub-folder names."""
    r = Path(root)
    if not r.is_dir():
        raise UserError(f"image folder not found: {r}")
    classes = sorted(d.name for d in r.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise UserError(f"{r}: no class sub-folders (expected ROOT/<class>/*.jpg, like PCam's 0/ and 1/)")
    files: list[Path] = []
    labels: list[int] = []
    for ci, c in enumerate(classes):
        found = sorted(f for f in (r / c).rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
        files += found
        labels += [ci] * len(found)
    if not files:
        raise UserError(f"{r}: no images in the class folders {classes}")
    return files, np.asarray(labels, dtype=np.int64), classes


class _ImageFiles:
    """Dataset over image paths -> (transform(image), ok flag); an unreadable file gives ok=False."""

    def __init__(self, files: list[Path], transform: Any) -> None:
        self.files, self.transform = files, transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[Any, bool]:
        from PIL import Image

        try:
            with Image.open(self.files[i]) as im:
                return self.transform(im.convert("RGB")), True
        except Exception as exc:  # noqa: BLE001 - reported and accounted for by the caller
            log.warning("unreadable image: %s (%s)", self.files[i], exc)
            size = getattr(self.transform, "image_size", None) or _probe_size(self.transform)
            import torch

            return torch.zeros(3, size, size), False


def _probe_size(transform: Any) -> int:
    from PIL import Image

    return int(transform(Image.new("RGB", (8, 8))).shape[-1])


def _autocast(device: str, fp16: bool) -> Any:
    import torch

    if fp16 and str(device).startswith("cuda"):
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def embed_batches(model: Any, batches: Any, device: str = "cpu", fp16: bool = False) -> Iterator[np.ndarray]:
    """Run `model` over an iterable of (B, 3, S, S) tensors -> float32 (B, D) arrays."""
    import torch

    model.eval()
    with torch.inference_mode(), _autocast(device, fp16):
        for x in batches:
            yield model(x.to(device, non_blocking=True)).float().cpu().numpy()


def embed_files(model: Any, files: list[Path], transform: Any, *, batch_size: int = 64, device: str = "cpu",
                num_workers: int = 0, fp16: bool = False, desc: str = "embed") -> tuple[np.ndarray, np.ndarray]:
    """(features (N, D) float32, ok (N,) bool) for image files, in order."""
    import torch

    loader = torch.utils.data.DataLoader(_ImageFiles(files, transform), batch_size=batch_size,
                                         num_workers=num_workers, shuffle=False,
                                         pin_memory=str(device).startswith("cuda"))
    oks: list[torch.Tensor] = []

    def images() -> Iterator[torch.Tensor]:
        for x, ok in loader:
            oks.append(ok)
            yield x

    feats = []
    with progress(total=len(files), desc=desc, unit="img") as bar:
        for f in embed_batches(model, images(), device, fp16):
            feats.append(f)
            bar.update(len(f))
    return np.concatenate(feats), torch.cat(oks).numpy().astype(bool)


def extract_image_folder(encoder: Any, folder: str | Path, out_h5: str | Path, *, batch_size: int = 64,
                         device: str = "cpu", num_workers: int = 0, fp16: bool = False,
                         max_per_class: int | None = None, seed: int = 0) -> Path:
    """ImageFolder -> `out_h5` (features, labels, paths; attrs classes + `encoder_attrs`). Unreadable files are
    left out and listed in the attribute ``skipped``. `max_per_class` keeps a seeded random subset."""
    import h5py

    from domainfm.core.io import atomic_path

    root = Path(folder)
    files, labels, classes = list_image_folder(root)
    if max_per_class:
        rng = np.random.default_rng(seed)
        keep = np.sort(np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:max_per_class]
                                       for c in range(len(classes))]))
        files, labels = [files[i] for i in keep], labels[keep]
    feats, ok = embed_files(encoder.model, files, encoder.transform, batch_size=batch_size, device=device,
                            num_workers=num_workers, fp16=fp16, desc=f"extract {root.name}")
    rel = [str(f.relative_to(root)) for f in files]
    skipped = [r for r, k in zip(rel, ok, strict=True) if not k]
    dtype = np.float16 if fp16 else np.float32
    with atomic_path(out_h5) as tmp, h5py.File(tmp, "w") as h5:
        h5.create_dataset("features", data=feats[ok].astype(dtype))
        h5.create_dataset("labels", data=labels[ok])
        h5.create_dataset("paths", data=np.asarray([r for r, k in zip(rel, ok, strict=True) if k], dtype=object),
                          dtype=h5py.string_dtype())
        h5.attrs["classes"] = classes
        h5.attrs["root"] = str(root)
        h5.attrs.update(encoder_attrs(encoder))
        h5.attrs["skipped"] = skipped
    if skipped:
        log.warning("%d unreadable images left out (listed in %s attrs['skipped'])", len(skipped), out_h5)
    return Path(out_h5)


def encoder_attrs(encoder: Any) -> dict[str, Any]:
    """The HDF5 attributes that say which encoder made a feature file (what `heatmap` rebuilds it from).

    ``encoder`` its name; ``encoder_spec`` what `load_encoder` takes to rebuild it (the encoder folder's or
    weights file's absolute path, or the architecture name for a random-init baseline);
    ``encoder_path`` the absolute path (folders and weights files only); ``encoder_arch``,
    ``encoder_image_size``, ``encoder_embed_dim``, ``encoder_source``; ``encoder_config`` all of it as JSON.
    """
    cfg = encoder.config
    attrs: dict[str, Any] = {
        "encoder": encoder.name, "encoder_spec": str(cfg.get("spec") or cfg.get("arch") or encoder.name),
        "encoder_arch": str(cfg.get("arch", "")), "encoder_image_size": int(encoder.image_size),
        "encoder_embed_dim": int(encoder.embed_dim), "encoder_source": str(cfg.get("source", "")),
        "encoder_config": _json(cfg)}
    if cfg.get("path"):
        attrs["encoder_path"] = str(cfg["path"])
    return attrs


def _json(obj: Any) -> str:
    import json

    return json.dumps(obj, default=str)


def _read_tiles_fn() -> Any:
    try:
        from domainfm.pathology.slides import read_tiles
    except ImportError:
        raise UserError("slide reading is not available (domainfm.pathology.slides.read_tiles missing)") from None
    return read_tiles


def extract_slide_features(encoder: Any, coords_h5: str | Path, out_h5: str | Path, batch_size: int = 64,
                           device: str = "cpu", num_workers: int = 0, fp16: bool = False,
                           slide_path: str | Path | None = None, layout: str = "domainfm", qc: Any = None,
                           qc_drop: bool = False, stain_normaliser: Any = None) -> Path:
    """One tiled slide -> `out_h5` with features (N, D), coords (N, 2) carrying the coords file's dataset
    attrs, the coords file's root attrs + `encoder_attrs` on the root. ``layout="clam"``: `out_h5`'s folder
    gets CLAM's ``h5_files/<id>.h5`` + ``pt_files/<id>.pt`` instead (the returned path is the .h5).

    ``qc`` (a `slides.qc.QCConfig`): every tile is checked (background, pen mark, blur) and the dataset
    ``qc_reason`` (N,) says why a tile failed ('' = passed); with ``qc_drop`` failed tiles are left out of
    ``features``/``coords`` and listed in ``qc_dropped_coords`` / ``qc_dropped_reason`` instead.
    ``stain_normaliser`` (e.g. `slides.qc.StainNormaliser`, Macenko): applied to each tile before the
    encoder's transform; its counts go to the attribute ``stain_normalisation``.

    Tiles are read in the coords file's order; decoding runs in a background thread pool when
    `num_workers` > 0 (slide readers are not fork-safe, threads are)."""
    import h5py
    import torch

    from domainfm.core.io import atomic_path

    if layout not in ("domainfm", "clam"):
        raise UserError(f"unknown feature layout {layout!r}: domainfm or clam")
    read_tiles = _read_tiles_fn()
    with h5py.File(coords_h5, "r") as src:
        if "coords" not in src:
            raise UserError(f"{coords_h5}: no 'coords' dataset")
        attrs = dict(src.attrs)
        dset_attrs = dict(src["coords"].attrs)  # CLAM's / TRIDENT's patching attributes
        n = int(src["coords"].shape[0])
    tf = encoder.transform
    pool = None
    if num_workers > 0:
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(num_workers)

    coords_out: list[np.ndarray] = []
    reasons: list[str] = []

    def prepare(im: Any) -> Any:
        if qc is not None:
            from domainfm.pathology.slides.qc import tile_qc

            reasons.append(tile_qc(np.asarray(im), qc)[1])
        if stain_normaliser is not None:
            im = stain_normaliser(im)
        return tf(im)

    def batches() -> Iterator[torch.Tensor]:
        kw = {"batch_size": batch_size}
        if slide_path is not None:
            kw["slide_path"] = slide_path
        for coords, images in read_tiles(coords_h5, **kw):
            coords_out.append(np.asarray(coords))
            # QC and stain counts are per tile in order: threads only when neither is on
            simple = pool is not None and qc is None and stain_normaliser is None
            tensors = list(pool.map(tf, images)) if simple else [prepare(im) for im in images]
            yield torch.stack(tensors)

    feats: list[np.ndarray] = []
    try:
        for f in embed_batches(encoder.model, batches(), device, fp16):
            feats.append(f)
    finally:
        if pool:
            pool.shutdown()
    d = encoder.embed_dim
    features = np.concatenate(feats) if feats else np.zeros((0, d), np.float32)
    coords = np.concatenate(coords_out) if coords_out else np.zeros((0, 2), np.int64)
    if len(features) != n:
        raise UserError(f"{coords_h5}: read {len(features)} tiles but the file lists {n}")
    root = {**attrs, **encoder_attrs(encoder)}
    extra: dict[str, np.ndarray] = {}
    if qc is not None:
        import dataclasses
        import json
        from collections import Counter

        why = np.asarray(reasons, dtype=object)
        failed = why != ""
        root["qc_config"] = json.dumps(dataclasses.asdict(qc))
        root["qc_failed"] = json.dumps(dict(Counter(why[failed].tolist())))
        if qc_drop:
            extra["qc_dropped_coords"] = coords[failed].astype(np.int64)
            extra["qc_dropped_reason"] = why[failed]
            features, coords = features[~failed], coords[~failed]
        else:
            extra["qc_reason"] = why
    if stain_normaliser is not None:
        import json

        root["stain_normalisation"] = json.dumps({"method": "macenko (torchstain)", **stain_normaliser.counts})
    if layout == "clam":
        from domainfm.pathology.features.interop import write_clam_pair

        h5p, _ = write_clam_pair(Path(out_h5).parent, Path(out_h5).stem, features, coords, dset_attrs, root)
        return h5p
    with atomic_path(out_h5) as tmp, h5py.File(tmp, "w") as h5:
        h5.create_dataset("features", data=features.astype(np.float16 if fp16 else np.float32))
        cd = h5.create_dataset("coords", data=coords.astype(np.int64))
        for k, v in extra.items():
            h5.create_dataset(k, data=v, dtype=h5py.string_dtype() if v.dtype == object else v.dtype)
        for k, v in dset_attrs.items():
            with contextlib.suppress(TypeError, ValueError):
                cd.attrs[k] = v
        for k, v in root.items():
            with contextlib.suppress(TypeError, ValueError):
                h5.attrs[k] = v
    return Path(out_h5)


def coords_files(tiles_out: str | Path) -> dict[str, Path]:
    """{slide_id: coords file} of a tiling output: ours (``coords/<id>.h5``), CLAM's ``create_patches_fp``
    (``patches/<id>.h5``) or TRIDENT's (``<job>/<mag>x_<px>px_<ov>px_overlap/patches/<id>_patches.h5``,
    given the job folder or the patching folder)."""
    d = Path(tiles_out)
    cands = [d / "coords", d / "patches"] + sorted(d.glob("*/patches"))
    dirs = [c for c in cands if c.is_dir() and any(c.glob("*.h5"))]
    if not dirs:
        raise UserError(f"{tiles_out}: no coords files (coords/*.h5 from `domainfm pathology tile`, CLAM's "
                        "patches/*.h5 or TRIDENT's */patches/*_patches.h5)")
    if len(dirs) > 1 and dirs[0].name != "coords":
        raise UserError(f"{tiles_out} holds several patchings ({', '.join(str(x.parent.name) for x in dirs)}); "
                        "pass one of them")
    files = sorted(dirs[0].glob("*.h5"))
    return {(f.stem[: -len("_patches")] if f.stem.endswith("_patches") else f.stem): f for f in files}


class _SlideJob:
    """One slide's features (`extract_slide_features`) as an executor call: a status, never an exception.
    Picklable, so that the ``ray`` executor ships it (encoder weights included) once to its workers."""

    def __init__(self, encoder: Any, **settings: Any) -> None:
        self.encoder, self.settings = encoder, settings

    def __call__(self, sid: str, coords_h5: Path, target: Path, slide_path: Path | None) -> str:
        try:
            extract_slide_features(self.encoder, coords_h5, target, slide_path=slide_path, **self.settings)
        except Exception as exc:  # noqa: BLE001 - one bad slide must not stop the batch
            log.error("slide %s failed: %s", sid, exc)
            return f"failed: {exc}"
        return "ok"


def extract_tiles_dir(encoder: Any, tiles_out: str | Path, out_dir: str | Path, *, batch_size: int = 64,
                      device: str = "cpu", num_workers: int = 0, fp16: bool = False,
                      layout: str = "domainfm", qc: Any = None, qc_drop: bool = False,
                      stain_normaliser: Any = None, slides: str | Path | None = None,
                      executor: str = "local", pool_opts: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every coords file of `tiles_out` (ours, CLAM's or TRIDENT's, see `coords_files`) ->
    ``out_dir/<slide_id>.h5`` (``layout="clam"``: ``out_dir/h5_files`` + ``out_dir/pt_files``); finished
    slides are skipped, a slide that fails is logged with its reason and the others go on. `slides`: a
    folder of slide files, matched by slide id, for coords files that do not record their slide (CLAM's,
    TRIDENT's). `executor`: ``local`` (one slide after the other, in this process) or ``ray`` (one
    task per slide; `pool_opts` go to `core.executor.get_pool`). Returns {slide_id: status/reason}."""
    from domainfm.core.executor import get_pool

    files = coords_files(tiles_out)
    slide_paths: dict[str, Path] = {}
    if slides is not None:
        from domainfm.pathology.slides.readers import find_slides, slide_id_of

        slide_paths = {slide_id_of(p): p for p in find_slides([slides])}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    status: dict[str, Any] = {}
    todo: list[tuple[str, Path, Path, Path | None]] = []
    for sid, f in files.items():
        target = out / f"{sid}.h5"
        done = target if layout == "domainfm" else out / "pt_files" / f"{sid}.pt"  # CLAM's .pt is written last
        if done.exists():
            status[sid] = "skipped (done)"
        elif slides is not None and sid not in slide_paths:
            status[sid] = f"failed: no slide named {sid} in {slides}"
            log.error("slide %s failed: not in %s", sid, slides)
        else:
            todo.append((sid, f, target, slide_paths.get(sid)))
    job = _SlideJob(encoder, batch_size=batch_size, device=device, num_workers=num_workers, fp16=fp16,
                    layout=layout, qc=qc, qc_drop=qc_drop, stain_normaliser=stain_normaliser)
    opts = dict(pool_opts or {})
    if executor != "local" and str(device).startswith("cuda"):
        opts.setdefault("num_gpus_per_task", 1)
    # local: one worker = this process and the encoder already loaded (as before executors existed)
    with get_pool(executor, 1 if executor == "local" else max(1, num_workers), **opts) as pool, \
            progress(total=len(todo), desc="slides", unit="slide") as bar:
        for i, res in pool.map_unordered(job, todo):
            sid = todo[i][0]
            status[sid] = res.value if res.ok else f"failed: {res.error}"
            if not res.ok:
                log.error("slide %s failed: %s", sid, res.error)
            bar.update(1)
    return {sid: status[sid] for sid in files if sid in status}
