"""How each language's program is built, run and judged inside the sandbox (a registry, one entry a language).

The recipes are MultiPL-E's own evaluation scripts (`evaluation/src/eval_<lang>.py`, the same files the
bigcode harness vendors as `multiple_metrics/eval_*.py`): the same compile and run commands and the same rule
for what counts as "OK". Each entry also names the host tools it needs and the Debian package that provides
them; a language whose tools are missing is *skipped with that reason*, never dropped silently.

A program is a file in the sandbox's private `/tmp` (or source on stdin for the two interpreters with a
sentinel check, Python and JavaScript) plus a `/bin/sh -c` command line. Tools are resolved to absolute paths
on the host (`/usr/...`, visible read-only inside the sandbox), so the sandbox needs no PATH lookups.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from domainfm.core.registry import Registry

COMPILE_FAILED = "__domainfm_compile_failed__"  # printed on stderr by the build step when it fails


@dataclass(frozen=True)
class Verdict:
    ok: bool
    detail: str = ""  # MultiPL-E's status word plus the error line, for failures


Judge = Callable[[int, str, str], Verdict]  # (exit code, stdout, stderr) -> verdict


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and COMPILE_FAILED not in ln]
    return lines[-1][:300] if lines else ""


def _first_error(text: str) -> str:
    for ln in text.splitlines():
        if "error" in ln.lower() and COMPILE_FAILED not in ln:
            return ln.strip()[:300]
    return _last_line(text)


def judge_exit_code(rc: int, out: str, err: str) -> Verdict:
    """The common rule (C++, Java, Rust, D, Bash, Lua, Ruby, R, TypeScript): OK iff exit code 0."""
    if COMPILE_FAILED in err:
        return Verdict(False, f"SyntaxError: {_first_error(err + out)}")
    if rc == 0:
        return Verdict(True)
    return Verdict(False, f"Exception: {_first_error(err) or _last_line(out) or f'exit code {rc}'}")


def judge_php(rc: int, out: str, err: str) -> Verdict:
    """eval_php.py: 'PHP Parse error' on stdout is a SyntaxError, else OK iff exit code 0."""
    if "PHP Parse error" in out:
        return Verdict(False, f"SyntaxError: {_last_line(out)}")
    return judge_exit_code(rc, out, err)


def judge_perl(rc: int, out: str, err: str) -> Verdict:
    """eval_pl.py: a non-zero exit, or 'ERROR' anywhere in stdout/stderr, is an Exception."""
    if rc != 0 or "ERROR" in out or "ERROR" in err:
        return Verdict(False, f"Exception: {_last_line(err) or _last_line(out) or f'exit code {rc}'}")
    return Verdict(True)


def judge_go(rc: int, out: str, err: str) -> Verdict:
    """eval_go.py runs `go test` and reads its stdout: build/setup failure, then any FAIL, else OK."""
    if "[setup failed]" in out or "[build failed]" in out:
        return Verdict(False, f"SyntaxError: {_first_error(out + err)}")
    if "FAIL" in out:
        return Verdict(False, f"Exception: {_first_error(out) or 'FAIL'}")
    return Verdict(True)


def judge_scala(rc: int, out: str, err: str) -> Verdict:
    """eval_scala.py: OK iff exit code 0 and nothing on stderr."""
    v = judge_exit_code(rc, out, err)
    return v if not v.ok or not err.strip() else Verdict(False, f"Exception: {_last_line(err)}")


@dataclass(frozen=True)
class Language:
    """One language: the host tools it needs, how a program is built and run, and what counts as OK."""

    name: str
    tools: tuple[str, ...]  # executables looked up on the host PATH (the first is the one users install)
    apt: str  # the Debian package(s) that provide the tools (what scripts/bootstrap.sh installs)
    filename: str = ""  # the program's file in the sandbox's /tmp ("" = source on stdin)
    command: str = ""  # /bin/sh -c command line; {tool_name} placeholders become absolute host paths
    judge: Judge = judge_exit_code
    timeout: float = 15.0  # MultiPL-E's safe_subprocess default is 15 s per step
    memory_mb: int | None = None  # address-space limit override (JVMs and Go reserve more than they use)
    binds: tuple[str, ...] = ()  # host config paths the toolchain reads (bound read-only when present)
    env: dict[str, str] = field(default_factory=dict)
    reads_stdout: bool = False  # the judge looks at stdout (else it goes to /dev/null, as a flood would)
    sentinel: bool = False  # Python/JavaScript: a pass also needs the run's random sentinel at the very end
    skip_reason: str = ""  # a language we deliberately do not install: why (reported as the skip reason)

    def resolve(self) -> dict[str, str] | None:
        """Absolute host paths of the tools, or None if one is missing."""
        found = {}
        for t in self.tools:
            p = shutil.which(t, path="/usr/local/bin:/usr/bin:/bin")
            if p is None:
                return None
            found[t.replace("-", "_").replace("+", "p").replace(".", "_")] = str(Path(p).resolve())
        return found

    def missing(self) -> str | None:
        """Why this language cannot run here (None when it can)."""
        if self.skip_reason:
            return self.skip_reason
        if self.resolve() is None:
            gone = [t for t in self.tools if shutil.which(t, path="/usr/local/bin:/usr/bin:/bin") is None]
            return f"runtime {', '.join(gone)} not installed (apt package {self.apt})"
        return None

    def argv(self) -> list[str]:
        tools = self.resolve()
        assert tools is not None, f"{self.name}: tools missing"
        return ["/bin/sh", "-c", self.command.format(**tools)]


def _build(step: str) -> str:
    """A build step whose failure is marked (MultiPL-E reports it as SyntaxError)."""
    # doubled braces: the command is a str.format template (single braces after formatting)
    return "{{ " + step + " ; }} || {{ echo " + COMPILE_FAILED + " >&2; exit 1; }}"


LANGUAGES: Registry[Language] = Registry("language")

_JAVATUPLES = "/usr/share/java/javatuples.jar"  # MultiPL-E's Java prompts import org.javatuples.*
_ENTRIES = [
    # Python and JavaScript keep the interpreter on stdin (see sandbox.py); the sentinel decides a pass
    Language("python", ("python3",), "python3", sentinel=True, timeout=10.0),
    Language("javascript", ("node",), "nodejs", sentinel=True, memory_mb=4096),
    Language("cpp", ("g++",), "g++", "main.cpp", _build("{gpp} main.cpp -o main -std=c++17") + " && ./main",
             timeout=30.0),
    Language("java", ("javac", "java"), "default-jdk-headless libjavatuples-java", "Problem.java",
             _build(f"{{javac}} -J-Xmx512m -J-XX:+UseSerialGC -encoding UTF8 -cp {_JAVATUPLES} -d . Problem.java")
             + f" && {{java}} -Xmx1g -XX:+UseSerialGC -ea -cp .:{_JAVATUPLES} Problem",
             timeout=30.0, memory_mb=8192, binds=("/etc/java-17-openjdk",)),
    Language("go", ("go",), "golang-go", "main_test.go", "{go} test main_test.go", judge=judge_go, timeout=30.0, reads_stdout=True,
             memory_mb=8192, env={"GOCACHE": "/tmp/.gocache", "GOPATH": "/tmp/go", "GO111MODULE": "off",
                                  "GOFLAGS": "-count=1", "CGO_ENABLED": "0"}),
    Language("rust", ("rustc",), "rustc", "main.rs", _build("{rustc} main.rs -o main") + " && ./main",
             timeout=30.0, binds=("/etc/alternatives",)),  # rustc links with `cc` (an alternatives link)
    Language("bash", ("bash",), "bash", "main.sh", "{bash} main.sh"),
    Language("lua", ("lua5.4",), "lua5.4 lua-unit", "main.lua", "{lua5_4} main.lua"),
    Language("ruby", ("ruby",), "ruby ruby-test-unit", "main.rb", "{ruby} main.rb"),
    Language("php", ("php",), "php-cli", "main.php", "{php} main.php", judge=judge_php, reads_stdout=True, binds=("/etc/php",)),
    Language("typescript", ("tsc", "node"), "node-typescript", "main.ts",
             _build("{tsc} --target esnext main.ts") + " && {node} main.js", timeout=30.0, memory_mb=4096),
    Language("perl", ("perl",), "perl libtest-deep-perl", "main.pl", "{perl} main.pl", judge=judge_perl,
             reads_stdout=True),
    Language("r", ("Rscript",), "r-base-core", "main.r", "{Rscript} main.r",
             binds=("/etc/R", "/etc/alternatives")),  # libblas.so.3 is an alternatives link
    # MultiPL-E runs D with `rdmd -unittest -main`; the tests end in `void main(){}`, so gdc -funittest builds the same binary
    Language("d", ("gdc",), "gdc", "main.d", _build("{gdc} -funittest main.d -o main") + " && ./main",
             timeout=30.0),
    Language("julia", ("julia",), "julia", "main.jl", "{julia} main.jl",
             skip_reason="runtime julia not installed (no Debian 12 package: julia is not in bookworm)"),
    Language("swift", ("swiftc",), "swiftlang", "main.swift", _build("{swiftc} main.swift -o main") + " && ./main",
             skip_reason="runtime swift not installed (no Debian 12 package: swiftlang is not in bookworm)"),
    # Debian 12's Scala is 2.11.12 (it runs on the JDK 17 here); eval_scala.py gives scalac 45 s
    Language("scala", ("scalac", "scala"), "scala", "Problem.scala",
             _build("{scalac} -d . Problem.scala") + " && {scala} -cp . Problem", judge=judge_scala,
             timeout=60.0, memory_mb=8192, binds=("/etc/alternatives",),
             env={"JAVA_OPTS": "-Xmx1g -XX:+UseSerialGC"}),
]
for _lang in _ENTRIES:
    LANGUAGES.register(_lang.name, _lang)


def get_language(name: str) -> Language:
    return LANGUAGES.get(name)
