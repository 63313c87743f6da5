"""Tile many slides: worker processes, rerun skips, per-slide failure isolation, summary.

Each slide is independent. A finished slide leaves `OUT/status/<slide_id>.json` (written atomically
after every other output) holding its summary row and the geometry settings; a rerun with the same
settings skips it, a rerun with other settings redoes it. A slide that fails (unreadable, corrupt, no
resolution, crash of its worker) gets a `failed` row with a one-line reason and no marker, so the
next run retries it; the batch goes on. A write under OUT that fails for the disk's sake (no space,
quota, file-size limit, read-only mount) stops the batch instead: the OSError reaches the command, which
prints one line (`core.locks.writes_output`); finished slides keep their markers and the slide being
written has none, so a rerun with space resumes. `OUT/summary.csv` lists every input of the run.
"""

from __future__ import annotations

import csv
import dataclasses
import errno
import io
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from domainfm.core.errors import UserError
from domainfm.core.executor import get_pool
from domainfm.core.io import atomic_write_json, atomic_write_text
from domainfm.core.locks import STORAGE_ERRNOS, storage_error
from domainfm.core.progress import get_logger, progress
from domainfm.pathology.slides.readers import find_slides, slide_id_of
from domainfm.pathology.slides.tiling import TileConfig, tile_slide

log = get_logger("slides")
SUMMARY_FIELDS = ["slide_id", "status", "n_tiles", "reason"]
EXTRA_FIELDS = ["level", "slide_mpp", "mpp_source", "n_grid", "seconds", "slide_path"]


def parse_slide_mpp(value: str | None) -> tuple[float | None, dict[str, float]]:
    """`--slide-mpp`: a number (fallback for slides without metadata) or a CSV `slide_id,mpp`."""
    if value is None or str(value).strip() == "":
        return None, {}
    try:
        v = float(value)
    except ValueError:
        pass
    else:
        if v <= 0:
            raise UserError(f"--slide-mpp must be > 0, got {value}")
        return v, {}
    p = Path(value)
    if not p.is_file():
        raise UserError(f"--slide-mpp {value!r} is neither a number nor an existing CSV file")
    table: dict[str, float] = {}
    rows = list(csv.reader(io.StringIO(p.read_text())))
    for i, row in enumerate(rows, 1):
        cells = [c.strip() for c in row]
        if not cells or not cells[0] or cells[0].startswith("#"):
            continue
        if i == 1 and cells[0].lower() in ("slide_id", "slide", "id"):
            continue  # header
        try:
            mpp = float(cells[1])
            if mpp <= 0:
                raise ValueError
        except (IndexError, ValueError):
            raise UserError(f"{p}:{i}: expected 'slide_id,mpp' with mpp > 0, got {','.join(row)!r}") from None
        table[slide_id_of(cells[0])] = mpp
    return None, table


def _marker(out: Path, sid: str) -> Path:
    return out / "status" / f"{sid}.json"


def _key(cfg: TileConfig, mpp: float | None) -> dict[str, Any]:
    return {**cfg.geometry_key(), "mpp_override": mpp}


def is_done(out: Path, sid: str, cfg: TileConfig, mpp: float | None) -> dict[str, Any] | None:
    """The previous summary row when this slide finished with the same settings, else None."""
    m = _marker(out, sid)
    if not m.is_file() or not (out / "coords" / f"{sid}.h5").is_file():
        return None
    try:
        rec = json.loads(m.read_text())
    except json.JSONDecodeError:
        return None
    if rec.get("key") != json.loads(json.dumps(_key(cfg, mpp))):
        return None
    if cfg.save_tiles and not (out / "tiles" / sid).is_dir():
        return None
    return rec.get("row")


def stops_batch(exc: BaseException, out: str | os.PathLike[str]) -> bool:
    """A failed write that no other slide could avoid (full disk, quota, EFBIG, read-only mount; permission
    denied on a path under OUT), as opposed to a bad slide: the batch stops with one line."""
    if not isinstance(exc, OSError) or (desc := storage_error(exc)) is None:
        return False
    if desc == STORAGE_ERRNOS[errno.EACCES]:  # permission denied on a slide is that slide's failure
        return exc.filename is not None and Path(str(exc.filename)).resolve().is_relative_to(Path(out).resolve())
    return True


def _work(path: str, out: str, cfg: TileConfig, mpp: float | None) -> dict[str, Any]:
    """One slide in a worker: a summary row (the reason is one line); raises only the OSError of a write
    that fails for the disk's sake (`stops_batch`), leaving this slide without its marker."""
    sid = slide_id_of(path)
    try:
        row = tile_slide(path, out, cfg, mpp=mpp)
    except UserError as exc:
        row = {"slide_id": sid, "status": "failed", "n_tiles": 0, "reason": str(exc)}
    except Exception as exc:  # noqa: BLE001 - a bad slide must not stop the batch; report it
        if stops_batch(exc, out):
            raise
        msg = " ".join(str(exc).split())[:200]
        row = {"slide_id": sid, "status": "failed", "n_tiles": 0, "reason": f"{type(exc).__name__}: {msg}"}
    else:
        atomic_write_json(_marker(Path(out), sid), {"row": row, "key": _key(cfg, mpp)})
    row["slide_path"] = str(path)
    return row


def tile_slides(inputs: list[str | os.PathLike[str]], out_dir: str | os.PathLike[str], cfg: TileConfig,
                slide_mpp: str | None = None, workers: int = 1, force: bool = False,
                on_row: Callable[[dict[str, Any]], None] | None = None, executor: str = "local",
                pool_opts: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Tile every slide found in `inputs`; returns one summary row per slide (input order) and writes
    `OUT/summary.csv`. Never raises for a bad slide: look for rows with status `failed`. `executor`:
    ``local`` or ``ray`` (one task per slide; `pool_opts` go to `core.executor.get_pool`)."""
    cfg.validate()
    fallback, table = parse_slide_mpp(slide_mpp)
    if fallback is not None:
        cfg = dataclasses.replace(cfg, slide_mpp=fallback)
    out_abs = Path(out_dir).resolve()
    # never treat our own outputs (thumbnails, tile JPEGs) as slides when OUT lies inside an input folder
    paths = [p for p in find_slides(list(inputs)) if not p.resolve().is_relative_to(out_abs)]
    if not paths:
        raise UserError(f"no slides found in {', '.join(map(str, inputs))}")
    ids = [slide_id_of(p) for p in paths]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise UserError(f"two slides share the id {dup[0]!r} (file name without extension); rename one")
    unknown = sorted(set(table) - set(ids))
    if unknown:
        log.warning("--slide-mpp CSV names slides not in the input: %s", ", ".join(unknown[:5]))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows: dict[str, dict[str, Any]] = {}
    todo = []
    for p, sid in zip(paths, ids, strict=True):
        prev = None if force else is_done(out, sid, cfg, table.get(sid))
        if prev is not None:
            rows[sid] = {**prev, "reason": "done in an earlier run (skipped)", "slide_path": str(p)}
        else:
            todo.append((str(p), sid))
    if len(rows):
        log.info("%d/%d slides already tiled with these settings, skipping them", len(rows), len(paths))
    bar = progress(total=len(todo), desc="tiling", unit="slide")

    def done(row: dict[str, Any]) -> None:
        rows[row["slide_id"]] = row
        if row["status"] != "ok":
            log.warning("%s failed: %s", row["slide_id"], row["reason"])
        if on_row:
            on_row(row)
        bar.update(1)

    # the executor contract (core.executor): local = this process (1 worker) or spawned processes
    with get_pool(executor, workers, **(pool_opts or {})) as pool:
        for i, res in pool.map_unordered(_work, [(p, str(out), cfg, table.get(sid)) for p, sid in todo]):
            p, sid = todo[i]
            if res.crashed:  # its worker died (local: the pool breaks; ray: after the task's retries)
                done({"slide_id": sid, "status": "failed", "n_tiles": 0, "slide_path": p,
                      "reason": "the worker process crashed (likely a corrupt slide in this batch)"})
            else:  # `_work` raises only the OSError of a full disk: the queued slides would fail alike
                done(res.result())
    bar.close()
    ordered = [rows[sid] for sid in ids]
    write_summary(out / "summary.csv", ordered)
    return ordered


def write_summary(path: Path, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=SUMMARY_FIELDS + EXTRA_FIELDS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: r.get(k, "") for k in SUMMARY_FIELDS + EXTRA_FIELDS})
    atomic_write_text(path, buf.getvalue())


def format_table(rows: list[dict[str, Any]]) -> str:
    """The end-of-run summary table (plain text)."""
    head = f"{'slide_id':<36} {'status':<7} {'tiles':>7} {'level':>5} {'mpp':>8}  reason"
    lines = [head, "-" * len(head)]
    for r in rows:
        mpp = r.get("slide_mpp", "")
        lines.append(f"{str(r['slide_id'])[:36]:<36} {r['status']:<7} {r.get('n_tiles', 0):>7} "
                     f"{str(r.get('level', '')):>5} {str(mpp):>8}  {r.get('reason', '')}")
    n_ok = sum(r["status"] == "ok" for r in rows)
    lines.append(f"{n_ok}/{len(rows)} slides ok, {len(rows) - n_ok} failed, "
                 f"{sum(int(r.get('n_tiles', 0)) for r in rows if r['status'] == 'ok')} tiles")
    return "\n".join(lines)
