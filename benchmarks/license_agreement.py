"""License agreement: our phrase rules (and ScanCode, if installed) vs the packages' own metadata.

For every `*.dist-info` of a site-packages folder (default: this venv's), three labels of the same
package:

- `metadata`: what `METADATA` declares (`License-Expression`, trove classifiers, `License:`), parsed
  by `licenses._pkg_info` (license-expression for SPDX, the free-text families otherwise);
- `rules`: our phrase rules (`licenses.detect_text`) on the package's license files
  (`dist-info/licenses/**` or `dist-info/LICENSE*`, `COPYING*`, `NOTICE*`: names as `is_license_file`);
- `scancode`: ScanCode's license matcher on the same files (`--scancode`; needs scancode-toolkit).

Each pair is compared on the license type (permissive / non_permissive / no_license, what the
curation filter decides) and on the license set; every disagreement is put in a class. The result
is printed as Markdown tables and written to `--out` (JSON, with every package's labels).

    .venv/bin/python benchmarks/license_agreement.py --out /tmp/license_agreement.json
    # with ScanCode in its own venv (its pins clash with ours): PYTHONPATH=src SCVENV/bin/python ...
"""

from __future__ import annotations

import argparse
import json
import site
import sys
import sysconfig
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from domainfm.code.curate import licenses  # noqa: E402

UNKNOWN = licenses.UNKNOWN


def family(key: str) -> str:
    """Coarse family for the 'same family, other variant' class: BSD-2/3 -> BSD, GPL-2.0-only -> GPL."""
    base = licenses._base_id(key)
    for prefix in ("BSD", "AGPL", "LGPL", "GPL", "MPL", "Apache", "EPL", "CC-BY", "MIT"):
        if base.startswith(prefix):
            return prefix
    return {"Python-2.0": "PSF", "PSF-2.0": "PSF", "Python-2.0.1": "PSF"}.get(base, base)


def norm(ids: set[str]) -> set[str]:
    return {licenses._base_id(i) for i in ids}


def classify(a: set[str], b: set[str]) -> str:
    """Why label set `a` (a detector) differs from `b` (the reference); 'agree' when equal."""
    a, b = norm(a), norm(b)
    if a == b:
        return "agree"
    if not b:
        return "reference declares nothing"
    if not a:
        return "no license file / nothing found"
    if UNKNOWN in a and (a - {UNKNOWN}) <= b:
        return "detector: text not identified (unknown)"
    if UNKNOWN in b and (b - {UNKNOWN}) <= a:
        return "reference: declaration not recognised (unknown)"
    if b < a:
        return "detector finds extra licenses (bundled texts)"
    if a < b:
        return "reference declares more licenses"
    if {family(x) for x in a} == {family(x) for x in b}:
        return "same family, other variant/version"
    return "different licenses"


def package_labels(dist: Path, detectors: dict) -> dict:
    meta = dist / "METADATA"
    text = meta.read_text(encoding="utf-8", errors="replace") if meta.is_file() else ""
    files = sorted(p for p in dist.rglob("*") if p.is_file() and licenses.is_license_file(p.name))
    out = {"package": dist.name, "license_files": [str(p.relative_to(dist)) for p in files],
           "metadata": sorted(licenses._pkg_info(text, licenses.detect_text)) if text else []}
    for name, det in detectors.items():
        # the curation's own reading (pointer files and NOTICE attributions add nothing, a one-name
        # LICENSE is a declaration), all scopes of the package together
        lm = licenses.LicenseMap(detector=det)
        t0 = time.perf_counter()
        for p in files:
            lm.add_file(str(p.relative_to(dist)), p.read_text(encoding="utf-8", errors="replace"))
        out[name] = sorted(set().union(*lm.scopes().values()))
        out[f"{name}_s"] = time.perf_counter() - t0
    return out


def table(rows: list[dict], a: str, b: str) -> str:
    n = len(rows)
    same_type = sum(licenses.license_type(r[a]) == licenses.license_type(r[b]) for r in rows)
    classes = Counter(classify(set(r[a]), set(r[b])) for r in rows)
    types = Counter((licenses.license_type(r[a]), licenses.license_type(r[b])) for r in rows)
    lines = [f"**{a} vs {b}** ({n} packages): same license type {same_type}/{n} ({same_type / n:.1%}), "
             f"same license set {classes['agree']}/{n} ({classes['agree'] / n:.1%})", "",
             f"| class ({a} vs {b}) | packages | examples |", "|---|---:|---|"]
    for cls, k in classes.most_common():
        ex = [f"{r['package'].split('-')[0]} ({', '.join(r[a]) or '-'} / {', '.join(r[b]) or '-'})"
              for r in rows if classify(set(r[a]), set(r[b])) == cls][:3]
        lines.append(f"| {cls} | {k} | {'; '.join(ex) if cls != 'agree' else ''} |")
    lines += ["", f"| license type: {a} \\ {b} | " + " | ".join(sorted({t for _, t in types})) + " |",
              "|---|" + "---:|" * len({t for _, t in types})]
    for ta in sorted({t for t, _ in types}):
        lines.append(f"| {ta} | " + " | ".join(str(types[(ta, tb)]) for tb in sorted({t for _, t in types})) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--site-packages", default=None, help="folder of *.dist-info (default: this venv's)")
    ap.add_argument("--scancode", action="store_true", help="also run ScanCode (needs scancode-toolkit)")
    ap.add_argument("--out", default=None, help="write every package's labels here (JSON)")
    ap.add_argument("--from-json", default=None, help="re-tabulate a previous --out (e.g. after a policy change)")
    args = ap.parse_args(argv)
    sp = Path(args.site_packages or sysconfig.get_paths()["purelib"] or site.getsitepackages()[0])
    detectors = {"rules": licenses.detect_text}
    if args.from_json:
        rows = json.loads(Path(args.from_json).read_text())
        args.scancode = all("scancode" in r for r in rows)
    elif args.scancode:
        t0 = time.perf_counter()
        detectors["scancode"] = licenses.get_detector("scancode")
        print(f"ScanCode index loaded in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    if not args.from_json:
        rows = [package_labels(d, detectors) for d in sorted(sp.glob("*.dist-info"))]
    with_files = [r for r in rows if r["license_files"]]
    print(f"{len(rows)} packages in {sp}; {len(with_files)} ship license files "
          f"({sum(len(r['license_files']) for r in rows)} files)\n")
    print(table(with_files, "rules", "metadata"))
    if args.scancode:
        print()
        print(table(with_files, "scancode", "metadata"))
        print()
        print(table(with_files, "rules", "scancode"))
        print(f"\ntime on license files: rules {sum(r['rules_s'] for r in rows):.2f} s, "
              f"scancode {sum(r['scancode_s'] for r in rows):.1f} s")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
