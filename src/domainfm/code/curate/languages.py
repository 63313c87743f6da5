"""Language detection from file name, extension and shebang (the Stack / GitHub linguist way, small).

Covers the 17 languages of StarCoder2's small models (C, C#, C++, Go, Java, JavaScript, Kotlin, Lua,
PHP, Python, R, Ruby, Rust, Scala, Shell, SQL, Swift, TypeScript) and common config/markup formats.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

_EXT: dict[str, str] = {}


def _add(lang: str, *exts: str) -> None:
    for e in exts:
        _EXT[e] = lang


_add("Python", ".py", ".pyi", ".pyw", ".pyx", ".pxd", ".pxi")
_add("C", ".c", ".h")
_add("C++", ".cc", ".cpp", ".cxx", ".c++", ".hh", ".hpp", ".hxx", ".h++", ".ipp", ".tpp", ".inl")
_add("C#", ".cs", ".csx")
_add("Go", ".go")
_add("Java", ".java")
_add("JavaScript", ".js", ".mjs", ".cjs", ".jsx")
_add("TypeScript", ".ts", ".tsx", ".mts", ".cts")
_add("Kotlin", ".kt", ".kts")
_add("Lua", ".lua")
_add("PHP", ".php", ".phtml")
_add("R", ".r", ".rmd")
_add("Ruby", ".rb", ".rake", ".gemspec")
_add("Rust", ".rs")
_add("Scala", ".scala", ".sc")
_add("Shell", ".sh", ".bash", ".zsh", ".ksh", ".fish")
_add("SQL", ".sql")
_add("Swift", ".swift")
_add("Objective-C", ".m", ".mm")
_add("Perl", ".pl", ".pm")
_add("Haskell", ".hs")
_add("Julia", ".jl")
_add("Dart", ".dart")
_add("Fortran", ".f", ".f90", ".f95", ".for")
_add("Cuda", ".cu", ".cuh")
_add("PowerShell", ".ps1", ".psm1")
_add("Batchfile", ".bat", ".cmd")
_add("HTML", ".html", ".htm", ".xhtml")
_add("CSS", ".css", ".scss", ".sass", ".less")
_add("XML", ".xml", ".xsd", ".xsl", ".xslt", ".svg", ".plist")
_add("JSON", ".json", ".jsonl", ".geojson", ".ipynb")
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

_SHEBANG = re.compile(r"^#!\s*(?:/usr)?(?:/local)?/bin/(?:env\s+(?:-S\s+)?)?([A-Za-z0-9_.+-]+)")
_INTERPRETERS = [
    (re.compile(r"python[0-9.]*$"), "Python"), (re.compile(r"(ba|z|k|da|fi)?sh$"), "Shell"),
    (re.compile(r"node(js)?$"), "JavaScript"), (re.compile(r"deno|ts-node$"), "TypeScript"),
    (re.compile(r"perl[0-9.]*$"), "Perl"), (re.compile(r"ruby[0-9.]*$"), "Ruby"),
    (re.compile(r"Rscript$"), "R"), (re.compile(r"lua[0-9.]*$"), "Lua"), (re.compile(r"php[0-9.]*$"), "PHP"),
]

CONFIG_LANGUAGES = frozenset({"JSON", "YAML", "TOML", "INI", "XML"})


def detect_language(path: str, head: str = "") -> str | None:
    """Language of `path` (POSIX, repo-relative); `head` is the start of the text for shebangs."""
    p = PurePosixPath(path)
    name = p.name.lower()
    if name in _NAMES:
        return _NAMES[name]
    if name.startswith("dockerfile"):
        return "Dockerfile"
    suffix = p.suffix.lower()
    if suffix in _EXT:
        return _EXT[suffix]
    if head.startswith("#!"):
        m = _SHEBANG.match(head)
        if m:
            interp = m.group(1)
            for rx, lang in _INTERPRETERS:
                if rx.match(interp):
                    return lang
    return None


def known_languages() -> list[str]:
    return sorted(set(_EXT.values()) | set(_NAMES.values()))
