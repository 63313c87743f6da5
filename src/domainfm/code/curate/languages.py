"""Language detection the GitHub linguist / go-enry way: file name, extension, content heuristics, shebang.

Three sources, in this order of trust:

1. a curated table in linguist's language names (the StarCoder2 languages and common config/markup
   formats; ``.ipynb`` is ``Jupyter Notebook``, expanded by `curate.notebooks`);
2. linguist's ``heuristics.yml`` rules for extensions that several languages share (``.h`` C/C++/
   Objective-C, ``.m`` Objective-C/MATLAB/..., ``.pl`` Perl/Prolog, ``.ts`` TypeScript/Qt translation
   XML, ...), mirrored in `HEURISTICS` with linguist's own patterns and rule order (first match wins);
3. the breadth of the rest from Pygments' lexer filename table (about 600 lexers, maintained upstream
   and already installed), with Pygments names mapped to linguist names where they differ.

Shebangs decide extensionless scripts. Anything else is ``None`` (the `language` step drops it).
"""

from __future__ import annotations

import functools
import re
from pathlib import PurePosixPath

_EXT: dict[str, str] = {}


def _add(lang: str, *exts: str) -> None:
    for e in exts:
        _EXT[e] = lang


_add("Python", ".py", ".pyi", ".pyw")
_add("Cython", ".pyx", ".pxd", ".pxi")
_add("C", ".c")
_add("C++", ".cc", ".cpp", ".cxx", ".c++", ".hpp", ".hxx", ".h++", ".ipp", ".tpp", ".inl")
_add("C#", ".cs", ".csx")
_add("Go", ".go")
_add("Java", ".java")
_add("JavaScript", ".js", ".mjs", ".cjs", ".jsx")
_add("TypeScript", ".mts", ".cts")
_add("TSX", ".tsx")
_add("Kotlin", ".kt", ".kts")
_add("Lua", ".lua")
_add("PHP", ".phtml")
_add("R", ".rmd")
_add("Ruby", ".rb", ".rake", ".gemspec")
_add("Rust", ".rs")
_add("Scala", ".scala")
_add("Shell", ".sh", ".bash", ".zsh", ".ksh")
_add("fish", ".fish")
_add("SQL", ".sql")
_add("Swift", ".swift")
_add("Objective-C++", ".mm")
_add("Haskell", ".hs")
_add("Julia", ".jl")
_add("Dart", ".dart")
_add("Fortran", ".f90", ".f95", ".f03")
_add("Cuda", ".cu", ".cuh")
_add("PowerShell", ".ps1", ".psm1")
_add("Batchfile", ".bat", ".cmd")
_add("HTML", ".html", ".htm", ".xhtml")
_add("CSS", ".css")
_add("SCSS", ".scss")
_add("Sass", ".sass")
_add("Less", ".less")
_add("XML", ".xml", ".xsd", ".xsl", ".xslt", ".svg", ".plist")
_add("JSON", ".json", ".jsonl", ".geojson")
_add("Jupyter Notebook", ".ipynb")
_add("YAML", ".yaml", ".yml")
_add("TOML", ".toml")
_add("INI", ".ini", ".cfg", ".conf", ".properties")
_add("Markdown", ".md", ".markdown")
_add("reStructuredText", ".rst")
_add("TeX", ".tex", ".sty")
_add("CMake", ".cmake")
_add("Makefile", ".mk", ".mak")
_add("Dockerfile", ".dockerfile")
_add("Protocol Buffer", ".proto")
_add("Text", ".txt")

_NAMES = {
    "makefile": "Makefile", "gnumakefile": "Makefile", "dockerfile": "Dockerfile",
    "cmakelists.txt": "CMake", "rakefile": "Ruby", "gemfile": "Ruby", "vagrantfile": "Ruby",
    "setup.cfg": "INI", "pipfile": "TOML", "build.gradle": "Groovy", "jenkinsfile": "Groovy",
    ".bashrc": "Shell", ".zshrc": "Shell", ".profile": "Shell", "configure": "Shell",
}

# linguist heuristics.yml (github-linguist/linguist lib/linguist/heuristics.yml), the rules for the
# extensions below, in linguist's order. Each rule: (language, patterns any-of, negative patterns none-of);
# no patterns = always matches. Ruby's `^`/`$` are line anchors, hence re.MULTILINE everywhere.
_OBJC = r"^\s*(@(interface|class|protocol|property|end|synchronised|selector|implementation)\b|#import\s+.+\.h[\">])"
_CPP = [r"^\s*#\s*include <(cstdint|string|vector|map|list|array|bitset|queue|stack|forward_list|unordered_map"
        r"|unordered_set|(i|o|io)stream)>", r"^\s*template\s*<", r"^[ \t]*(try|constexpr)", r"^[ \t]*catch\s*\(",
        r"^[ \t]*(class|(using[ \t]+)?namespace)\s+\w+", r"^[ \t]*(private|public|protected):$",
        r"__has_cpp_attribute|__cplusplus >", r"std::\w+"]
_PERL = [r"\buse\s+(?:strict\b|v?5\b)", r"^\s*use\s+(?:constant|overload)\b", r"^\s*(?:\*|(?:our\s*)?@)EXPORT\s*=",
         r"^\s*package\s+[^\W\d]\w*(?:::\w+)*\s*(?:[;{]|\sv?\d)", r"[\s$][^\W\d]\w*(?::\w+)*->[a-zA-Z_\[({]"]
_RAKU = r"^\s*(?:use\s+v6\b|\bmodule\b|\b(?:my\s+)?class\b)"
_FORTRAN = r"^(?i:[c*][^abd-z]|      (subroutine|program|end|data)\s|\s*!)"
Rule = tuple[str, list[str], list[str]]
HEURISTICS: dict[str, list[Rule]] = {
    ".h": [("Objective-C", [_OBJC], []), ("C++", _CPP, []), ("C", [], [])],
    ".m": [("Objective-C", [_OBJC], []), ("Mercury", [r":- module"], []), ("MUF", [r"^: "], []),
           ("M", [r"^\s*;"], []), ("MATLAB", [r"^\s*%"], []), ("Limbo", [r"^\w+\s*:\s*module\s*\{"], [])],
    ".pl": [("Prolog", [r"^[^#]*:-"], []), ("Perl", _PERL, [r"^\s*use\s+v6\b"]), ("Raku", [_RAKU], [])],
    ".pm": [("Perl", _PERL, [r"^\s*use\s+v6\b"]), ("Raku", [_RAKU], []),
            ("X PixMap", [r"^\s*\/\* XPM \*\/"], [])],
    ".ts": [("XML", [r"<TS\b"], []), ("TypeScript", [], [])],
    ".r": [("Rebol", [r"(?i:\bRebol\b)"], []), ("R", [r"<-|^\s*#"], [])],
    ".php": [("Hack", [r"<\?hh"], []), ("PHP", [r"<\?[^h]"], [])],
    ".hh": [("Hack", [r"<\?hh"], [])],
    ".sc": [("SuperCollider", [r"(?i:\^(this|super)\.|^\s*~\w+\s*=\.)"], []),
            ("Scala", [r"(^\s*import (scala|java)\.|^\s*class\b)"], [])],
    ".f": [("Forth", [r"^: "], []), ("Filebench WML", [r"flowop"], []), ("Fortran", [_FORTRAN], [])],
    ".for": [("Forth", [r"^: "], []), ("Fortran", [_FORTRAN], [])],
    ".cl": [("Common Lisp", [r"^\s*\((?i:defun|in-package|defpackage) "], []), ("Cool", [r"^class"], []),
            ("OpenCL", [r"\/\* |\/\/ |^\}"], [])],
    ".ml": [("OCaml", [r"(^\s*module)|let rec |match\s+(\S+\s)+with"], []),
            ("Standard ML", [r"=> |case\s+(\S+\s)+of"], [])],
    ".v": [("Rocq Prover", [r"(?:^|\s)(?:Proof|Qed)\.(?:$|\s)|(?:^|\s)Require[ \t]+(Import|Export)\s"], []),
           ("Verilog", [r"^[ \t]*module\s+[^\s()]+\s+\#?\(|^[ \t]*`(?:define|ifdef|ifndef|include|timescale)"
                        r"|^[ \t]*always[ \t]+@|^[ \t]*initial[ \t]+(begin|@)"], []),
           ("V", [r"\$(?:if|else)[ \t]|^[ \t]*fn\s+[^\s()]+\(.*?\).*?\{|^[ \t]*for\s*\{"], [])],
}
# when no rule matches, linguist falls back to its classifier; we fall back to the most common language
_HEURISTIC_DEFAULT = {".h": "C", ".m": "Objective-C", ".pl": "Perl", ".pm": "Perl", ".ts": "TypeScript",
                      ".r": "R", ".php": "PHP", ".hh": "C++", ".sc": "Scala", ".f": "Fortran", ".for": "Fortran",
                      ".cl": "OpenCL", ".ml": "OCaml", ".v": "Verilog"}
HEURISTIC_CHARS = 65536  # content looked at by the heuristics (linguist reads the whole blob; 64 KiB is plenty)

# Pygments lexer names -> linguist language names where they differ; None = not source code (skip)
_PYGMENTS_NAMES: dict[str, str | None] = {
    "Bash": "Shell", "Text only": "Text", "Matlab": "MATLAB", "S": "R", "verilog": "Verilog",
    "systemverilog": "SystemVerilog", "vhdl": "VHDL", "Properties": "Java Properties", "Perl6": "Raku",
    "Groff": "Roff", "VB.net": "Visual Basic .NET", "NASM": "Assembly", "ca65 assembler": "Assembly",
    "GAS": "Unix Assembly", "Delphi": "Pascal", "Nimrod": "Nim", "VimL": "Vim Script", "ReasonML": "Reason",
    "Org Mode": "Org", "Graphviz": "Graphviz (DOT)", "HTML+Handlebars": "Handlebars", "Bazel": "Starlark",
    "WebGPU Shading Language": "WGSL", "Docker": "Dockerfile", "Makefile": "Makefile", "CMake": "CMake",
    "BBCode": None, "ASCII armored": None, "Raw token data": None, "Debian Sourcelist": None,
    "Hexdump": None, "Text output": None,
}

_SHEBANG = re.compile(r"^#!\s*(?:/usr)?(?:/local)?/bin/(?:env\s+(?:-S\s+)?)?([A-Za-z0-9_.+-]+)")
_INTERPRETERS = [
    (re.compile(r"python[0-9.]*$"), "Python"), (re.compile(r"(ba|z|k|da|fi)?sh$"), "Shell"),
    (re.compile(r"node(js)?$"), "JavaScript"), (re.compile(r"deno|ts-node$"), "TypeScript"),
    (re.compile(r"perl[0-9.]*$"), "Perl"), (re.compile(r"ruby[0-9.]*$"), "Ruby"),
    (re.compile(r"Rscript$"), "R"), (re.compile(r"lua[0-9.]*$"), "Lua"), (re.compile(r"php[0-9.]*$"), "PHP"),
]

CONFIG_LANGUAGES = frozenset({"JSON", "YAML", "TOML", "INI", "XML"})


@functools.lru_cache(maxsize=1)
def _compiled() -> dict[str, list[tuple[str, re.Pattern | None, re.Pattern | None]]]:
    out = {}
    for ext, rules in HEURISTICS.items():
        out[ext] = [(lang, re.compile("|".join(f"(?:{p})" for p in pos), re.M) if pos else None,
                     re.compile("|".join(f"(?:{p})" for p in neg), re.M) if neg else None)
                    for lang, pos, neg in rules]
    return out


def disambiguate(ext: str, content: str) -> str | None:
    """Language of a file with extension `ext` (lower case, with the dot) from its content, by linguist's
    heuristics; None when the extension has no rules. No rule matching gives the extension's default."""
    rules = _compiled().get(ext)
    if rules is None:
        return None
    text = content[:HEURISTIC_CHARS]
    for lang, pos, neg in rules:
        if (pos is None or pos.search(text)) and (neg is None or not neg.search(text)):
            return lang
    return _HEURISTIC_DEFAULT[ext]


def is_ambiguous(path: str) -> bool:
    """True when `path`'s language depends on its content (a heuristics extension, or one that several
    Pygments lexers claim and neither the curated table nor the heuristics decide)."""
    suffix = PurePosixPath(path).suffix.lower()
    return suffix in HEURISTICS or (suffix not in _EXT and suffix in _pygments_tables()[2])


@functools.lru_cache(maxsize=1)
def _pygments_tables() -> tuple[dict[str, str], dict[str, str], frozenset[str]]:
    """(extension -> language, exact file name -> language, extensions several lexers claim) from
    Pygments' lexer table (first lexer in alphabetical order for the table; see `_pygments_guess`)."""
    try:
        from pygments.lexers import get_all_lexers
    except ImportError:  # pygments is a dependency of rich/typer; stay usable without it
        return {}, {}, frozenset()
    exts: dict[str, str] = {}
    names: dict[str, str] = {}
    claims: dict[str, set[str]] = {}
    for name, _aliases, globs, _mimes in sorted(get_all_lexers(), key=lambda lx: lx[0].lower()):
        lang = _PYGMENTS_NAMES.get(name, name)
        if lang is None:
            continue
        for g in globs:
            if g.startswith("*.") and not any(c in g[2:] for c in "*?[]"):
                exts.setdefault(g[1:].lower(), lang)
                claims.setdefault(g[1:].lower(), set()).add(lang)
            elif not any(c in g for c in "*?[]"):
                names.setdefault(g.lower(), lang)
    return exts, names, frozenset(e for e, langs in claims.items() if len(langs) > 1)


def _pygments_guess(name: str, text: str) -> str | None:
    """Pygments' own content disambiguation (each candidate lexer's `analyse_text` score) among the
    lexers claiming `name`; None when Pygments finds none."""
    from pygments.lexers import guess_lexer_for_filename
    from pygments.util import ClassNotFound

    try:
        lexer = guess_lexer_for_filename(name, text[:HEURISTIC_CHARS])
    except ClassNotFound:
        return None
    return _PYGMENTS_NAMES.get(lexer.name, lexer.name)


def detect_language(path: str, head: str = "") -> str | None:
    """Language of `path` (POSIX, repo-relative); `head` is the start of the text (shebang, heuristics)."""
    p = PurePosixPath(path)
    name = p.name.lower()
    if name in _NAMES:
        return _NAMES[name]
    if name.startswith("dockerfile"):
        return "Dockerfile"
    suffix = p.suffix.lower()
    if suffix in HEURISTICS:
        return disambiguate(suffix, head)
    if suffix in _EXT:
        return _EXT[suffix]
    if head.startswith("#!"):
        m = _SHEBANG.match(head)
        if m:
            interp = m.group(1)
            for rx, lang in _INTERPRETERS:
                if rx.match(interp):
                    return lang
    py_exts, py_names, py_shared = _pygments_tables()
    if name in py_names:
        return py_names[name]
    if suffix and suffix in py_shared and head:
        return _pygments_guess(p.name, head) or py_exts[suffix]
    if suffix and suffix in py_exts:
        return py_exts[suffix]
    return None


def known_languages() -> list[str]:
    py_exts, py_names, _ = _pygments_tables()
    return sorted(set(_EXT.values()) | set(_NAMES.values()) | set(py_exts.values()) | set(py_names.values())
                  | {lang for rules in HEURISTICS.values() for lang, _, _ in rules})
