"""Does the in-domain encoder help? Linear probe + kNN on labelled tile features, several encoders side by side.

For each encoder: features of the train split and the test split (an ImageFolder each, extracted and
cached under ``OUT/features/<encoder>/``), then

* linear probe: standardised features -> L2-regularised logistic regression; C picked on a 20% hold-out
  of the train split from a small grid, refit on all of it;
* kNN: cosine similarity, k nearest train tiles, votes weighted by exp(sim / 0.07) (Wu et al. 2018);

and AUC (binary: tumour score; multi-class: macro one-vs-rest) and accuracy on the test split. Outputs:
``results.json``, ``results.md`` (a Markdown table) and ``embedding.png`` (UMAP or t-SNE of the test
features coloured by label, one panel per encoder).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from domainfm.core.errors import UserError
from domainfm.core.progress import get_logger

log = get_logger("pathology.probe")


@dataclass
class ProbeConfig:
    train: str = field(default="", metadata={"help": "labelled ImageFolder (or features .h5) to fit on"})
    test: str = field(default="", metadata={"help": "labelled ImageFolder (or features .h5) to score on"})
    encoder: list[str] = field(default_factory=list, metadata={
        "help": "encoder folder, architecture name (random init) or weights file; repeat for several"})
    output: str = field(default="", metadata={"help": "output folder"})
    image_size: int = field(default=0, metadata={
        "help": "input size for every encoder (0 = a pretrained folder's own; names/files follow the first one)"})
    max_train_per_class: int = field(default=0, metadata={"help": "seeded subset of train per class (0 = all)"})
    max_test_per_class: int = field(default=0, metadata={"help": "seeded subset of test per class (0 = all)"})
    knn_k: int = field(default=20, metadata={"help": "neighbours for the kNN classifier"})
    embedding: str = field(default="umap", metadata={"help": "umap, tsne or none"})
    embedding_points: int = field(default=2000, metadata={"help": "test points drawn in the embedding plot"})
    batch_size: int = field(default=128, metadata={"help": "extraction batch size"})
    workers: int = field(default=2, metadata={"help": "DataLoader workers for extraction"})
    device: str = field(default="cpu", metadata={"help": "cpu, cuda, ..."})
    seed: int = field(default=0, metadata={"help": "subset / hold-out / embedding seed"})


def load_features(path: str | Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(features float32 (N, D), labels (N,), classes) from an `extract --images` HDF5 file."""
    import h5py

    p = Path(path)
    if not p.is_file():
        raise UserError(f"features file not found: {p}")
    with h5py.File(p, "r") as h5:
        if "labels" not in h5:
            raise UserError(f"{p}: no 'labels' dataset (extract it from a labelled ImageFolder with --images)")
        x = h5["features"][:].astype(np.float32)
        y = h5["labels"][:].astype(np.int64)
        classes = [str(c) for c in h5.attrs.get("classes", [])]
    return x, y, classes


def _l2n(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def knn_scores(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, k: int = 20,
               temperature: float = 0.07, n_classes: int | None = None, exclude_self: bool = False,
               chunk: int = 1024) -> np.ndarray:
    """Weighted kNN class probabilities (N_test, C) with cosine similarity; `exclude_self` for leave-one-out."""
    c = int(n_classes or train_y.max() + 1)
    a, b = _l2n(train_x.astype(np.float32)), _l2n(test_x.astype(np.float32))
    k = min(k, len(a) - int(exclude_self))
    out = np.zeros((len(b), c), dtype=np.float64)
    for s in range(0, len(b), chunk):
        sim = b[s:s + chunk] @ a.T  # (n, N_train)
        if exclude_self:
            sim[np.arange(sim.shape[0]), np.arange(s, s + sim.shape[0])] = -np.inf
        idx = np.argpartition(-sim, k - 1, axis=1)[:, :k]  # (n, k) unordered top-k
        w = np.exp(np.take_along_axis(sim, idx, axis=1) / temperature)
        votes = np.zeros((sim.shape[0], c))
        np.add.at(votes, (np.repeat(np.arange(sim.shape[0]), k), train_y[idx].ravel()), w.ravel())
        out[s:s + chunk] = votes / votes.sum(1, keepdims=True)
    return out


def knn_loo_accuracy(x: np.ndarray, y: np.ndarray, k: int = 20) -> float:
    """Leave-one-out kNN accuracy of features on one labelled set (the pretraining monitor)."""
    probs = knn_scores(x, y, x, k=k, exclude_self=True)
    return float((probs.argmax(1) == y).mean())


def linear_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, seed: int = 0,
                 cs: tuple[float, ...] = (0.01, 0.1, 1.0)) -> tuple[np.ndarray, float]:
    """Logistic regression on standardised features -> (test probabilities (N, C), chosen C)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def fit(x: np.ndarray, y: np.ndarray, c: float) -> Any:
        return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=1000)).fit(x, y)

    best_c, best = cs[0], -1.0
    if len(cs) > 1:
        xa, xb, ya, yb = train_test_split(train_x, train_y, test_size=0.2, random_state=seed, stratify=train_y)
        for c in cs:
            score = _auc(yb, fit(xa, ya, c).predict_proba(xb))
            if score > best:
                best_c, best = c, score
    return fit(train_x, train_y, best_c).predict_proba(test_x), best_c


def _auc(y: np.ndarray, probs: np.ndarray) -> float:
    from domainfm.core.metrics import roc_auc

    if probs.shape[1] == 2:
        return roc_auc(y, probs[:, 1])
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, probs, multi_class="ovr", average="macro"))


def scores(y: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    return {"auc": round(_auc(y, probs), 4), "accuracy": round(float((probs.argmax(1) == y).mean()), 4)}


def probe_features(train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray], k: int = 20,
                   seed: int = 0) -> dict[str, Any]:
    """Linear probe + kNN for one encoder's (features, labels) pairs -> metrics."""
    (xtr, ytr), (xte, yte) = train, test
    if len(np.unique(ytr)) < 2:
        raise UserError("the train split needs at least two classes")
    n_classes = int(max(ytr.max(), yte.max()) + 1)
    lin, c = linear_probe(xtr, ytr, xte, seed=seed)
    knn = knn_scores(xtr, ytr, xte, k=k, n_classes=n_classes)
    if lin.shape[1] < n_classes:
        raise UserError("the test split has classes the train split lacks")
    return {"linear": {**scores(yte, lin), "C": c}, "knn": {**scores(yte, knn), "k": k},
            "n_train": int(len(ytr)), "n_test": int(len(yte)), "dim": int(xtr.shape[1])}


def plot_embedding(panels: dict[str, tuple[np.ndarray, np.ndarray]], classes: list[str], path: Path,
                   method: str = "umap", seed: int = 0) -> None:
    """One 2-D embedding panel per encoder, points coloured by label."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.preprocessing import StandardScaler

    from domainfm.core.io import atomic_path

    n = len(panels)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 4.2), squeeze=False)
    for ax, (name, (x, y)) in zip(axes[0], panels.items(), strict=True):
        xs = StandardScaler().fit_transform(x)
        if method == "umap":
            import umap

            emb = umap.UMAP(n_neighbors=min(15, len(xs) - 1), min_dist=0.1, random_state=seed, n_jobs=1).fit_transform(xs)
        else:
            from sklearn.manifold import TSNE

            emb = TSNE(n_components=2, init="pca", random_state=seed,
                       perplexity=float(min(30, max(2, (len(xs) - 1) // 3)))).fit_transform(xs)
        for ci in np.unique(y):
            m = y == ci
            ax.scatter(emb[m, 0], emb[m, 1], s=3, alpha=0.6, label=classes[ci] if ci < len(classes) else str(ci))
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(markerscale=4, fontsize=8, title="label")
    fig.suptitle(f"{method.upper()} of test features")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "encoder"


def markdown_table(results: dict[str, Any]) -> str:
    rows = ["| encoder | linear AUC | linear acc | kNN AUC | kNN acc | dim | n train / test |",
            "|---|---|---|---|---|---|---|"]
    for name, r in results["encoders"].items():
        rows.append(f"| {name} | {r['linear']['auc']:.4f} | {r['linear']['accuracy']:.4f} | {r['knn']['auc']:.4f} "
                    f"| {r['knn']['accuracy']:.4f} | {r['dim']} | {r['n_train']} / {r['n_test']} |")
    return "\n".join(rows) + "\n"


def cache_key(spec: str, enc: Any, split_dir: str, max_per_class: int, seed: int) -> dict[str, Any]:
    """Every parameter that decides the cached features: which encoder (spec, resolved path, name, input
    size, its whole config), which images (resolved folder) and which subset (max per class, seed)."""
    import json

    p = Path(spec)
    return json.loads(json.dumps({
        "encoder_spec": str(p.resolve()) if p.exists() else spec, "encoder": enc.name,
        "image_size": int(enc.image_size), "encoder_config": enc.config,
        "images": str(Path(split_dir).resolve()), "max_per_class": int(max_per_class or 0), "seed": int(seed),
    }, sort_keys=True, default=str))


def check_cache_key(target: Path, key_file: Path, key: dict[str, Any]) -> None:
    """Refuse cached features made with other parameters (or with unknown ones)."""
    import json

    if not key_file.is_file():
        raise UserError(f"{target}: cached features without {key_file.name} (unknown parameters); "
                        "delete it or use another output folder")
    old = json.loads(key_file.read_text())
    diff = sorted(k for k in set(old) | set(key) if old.get(k) != key.get(k))
    if diff:
        raise UserError(f"{target}: cached features were made with other parameters ({', '.join(diff)} differ); "
                        "delete it or use another output folder")


def _encoder_features(spec: str, split_dir: str, cache: Path, size: int | None, cfg: ProbeConfig,
                      max_per_class: int) -> tuple[Path, str]:
    """Extract (or reuse) the features of one split for one encoder; returns (h5 path, encoder name)."""
    from domainfm.core.io import atomic_write_json
    from domainfm.pathology.features.encoders import load_encoder
    from domainfm.pathology.features.extract import extract_image_folder

    enc = load_encoder(spec, device=cfg.device, image_size=size)
    target = cache / _slug(f"{enc.name}-{enc.image_size}px") / f"{_slug(Path(split_dir).name)}.h5"
    key = cache_key(spec, enc, split_dir, max_per_class, cfg.seed)
    key_file = target.with_suffix(".key.json")
    if target.is_file():  # written atomically, so present means complete
        check_cache_key(target, key_file, key)
        return target, enc.name
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(key_file, key)  # before the features: a killed run leaves a key and no features
    extract_image_folder(enc, split_dir, target, batch_size=cfg.batch_size, device=cfg.device,
                         num_workers=cfg.workers, max_per_class=max_per_class or None, seed=cfg.seed)
    return target, enc.name


def run_probe(cfg: ProbeConfig) -> dict[str, Any]:
    """Probe every encoder on cfg.train -> cfg.test; writes results.json, results.md, embedding.png."""
    import json

    from domainfm.core.io import atomic_write_json, atomic_write_text

    if not cfg.train or not cfg.test:
        raise UserError("give --train and --test (labelled ImageFolders, or features .h5 files)")
    if not cfg.output:
        raise UserError("give the output folder with -o/--output")
    if cfg.embedding not in ("umap", "tsne", "none"):
        raise UserError(f"--embedding {cfg.embedding!r}: choose umap, tsne or none")
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    pairs: dict[str, tuple[Path, Path]] = {}
    if cfg.train.endswith(".h5") and cfg.test.endswith(".h5"):
        pairs[Path(cfg.train).parent.name or "features"] = (Path(cfg.train), Path(cfg.test))
    else:
        if not cfg.encoder:
            raise UserError("give at least one --encoder (a pretrain folder, e.g. resnet18, or a weights file)")
        size = cfg.image_size or None
        if size is None:  # names and weight files follow the first pretrained folder's input size
            for spec in cfg.encoder:
                cj = Path(spec) / "config.json"
                if cj.is_file():
                    size = int(json.loads(cj.read_text()).get("image_size", 224))
                    break
        for spec in cfg.encoder:
            own = None if (Path(spec) / "config.json").is_file() and not cfg.image_size else size
            tr, name = _encoder_features(spec, cfg.train, out / "features", own, cfg, cfg.max_train_per_class)
            te, _ = _encoder_features(spec, cfg.test, out / "features", own, cfg, cfg.max_test_per_class)
            label = name if name not in pairs else f"{name} ({spec})"
            pairs[label] = (tr, te)
    results: dict[str, Any] = {"train": cfg.train, "test": cfg.test, "encoders": {}}
    panels: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    classes: list[str] = []
    for name, (tr, te) in pairs.items():
        xtr, ytr, classes = load_features(tr)
        xte, yte, _ = load_features(te)
        log.info("probing %s: %d train / %d test features of dim %d", name, len(ytr), len(yte), xtr.shape[1])
        r = probe_features((xtr, ytr), (xte, yte), k=cfg.knn_k, seed=cfg.seed)
        r["features"] = {"train": str(tr), "test": str(te)}
        results["encoders"][name] = r
        pick = np.random.default_rng(cfg.seed).permutation(len(yte))[:cfg.embedding_points]  # same points
        panels[name] = (xte[pick], yte[pick])
    results["classes"] = classes
    if cfg.embedding != "none":
        plot_embedding(panels, classes, out / "embedding.png", method=cfg.embedding, seed=cfg.seed)
        results["embedding"] = str(out / "embedding.png")
    atomic_write_json(out / "results.json", results)
    atomic_write_text(out / "results.md", markdown_table(results))
    print(markdown_table(results), end="")
    return results
