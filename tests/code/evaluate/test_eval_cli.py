"""`domainfm code evaluate` end to end: --list, --samples, --endpoint (a local OpenAI-compatible server),
resume after an interruption, one-line user errors, and the refusal to run without a sandbox."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from domainfm.cli import main
from domainfm.code.evaluate import sandbox as sandbox_mod
from domainfm.code.evaluate.sandbox import Sandbox
from domainfm.code.evaluate.tasks import TASKS, get_task


def test_list_shows_every_task(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["code", "evaluate", "--list"]) == 0
    out = capsys.readouterr().out
    for name in TASKS.names():
        assert name in out
    assert "ready" in out


def test_user_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    samples = tmp_path / "s.jsonl"
    samples.write_text(json.dumps({"task_id": "MBPP/11", "completion": "x"}) + "\n")
    cases = [
        ["--tasks", "mbpp", "--samples", str(samples), "--data-dir", str(tmp_path / "empty")],
        ["--tasks", "nope", "--samples", str(samples)],
        ["--tasks", "humaneval"],
        ["--tasks", "humaneval", "--samples", str(tmp_path / "missing.jsonl")],
        ["--tasks", "humaneval", "--samples", str(samples)],  # task_id not in humaneval
    ]
    for args in cases:
        rc = main(["code", "evaluate", *args, "-o", str(tmp_path / "o")])
        err = capsys.readouterr().err.strip()
        assert rc == 2, args
        assert err.startswith("domainfm: error:") and "\n" not in err, err
    main(["code", "evaluate", *cases[0], "-o", str(tmp_path / "o")])
    assert "code/mbpp/mbpp.jsonl" in capsys.readouterr().err


def test_samples_mode_writes_outputs(sandbox: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    probs = get_task("humaneval").load().problems[:4]
    rows = [{"task_id": p.task_id, "completion": p.reference} for p in probs[::-1]]
    rows.append({"task_id": probs[0].task_id, "completion": "    return 1\n"})
    f = tmp_path / "samples.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    assert main(["code", "evaluate", "--samples", str(f), "-o", str(out)]) == 0
    assert "| humaneval |" in capsys.readouterr().out
    res = json.loads((out / "results.json").read_text())
    assert res["humaneval"]["pass@1"] == pytest.approx((0.5 + 3) / 4)
    lines = [json.loads(x) for x in (out / "samples_results.jsonl").read_text().splitlines()]
    assert [x["completion"] for x in lines] == [r["completion"] for r in rows]
    assert [x["passed"] for x in lines] == [True] * 4 + [False]
    assert lines[-1]["result"].startswith("failed")


class _Server:
    """A tiny OpenAI-compatible completions server answering with each problem's reference."""

    def __init__(self, answers: dict[str, str]) -> None:
        self.answers = answers
        self.requests: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append({"path": self.path, **body})
                prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
                choices = []
                for i, p in enumerate(prompts):
                    for j in range(body.get("n", 1)):
                        text = outer.answers.get(p, "    return None\n") + "\ndef junk():\n    pass\n"
                        choices.append({"index": i * body.get("n", 1) + j, "text": text})
                data = json.dumps({"id": "x", "object": "text_completion", "choices": choices}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> _Server:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_endpoint_mode_and_resume(sandbox: Sandbox, tmp_path: Path) -> None:
    probs = get_task("humaneval").load().problems[:5]
    answers = {p.prompt: p.reference for p in probs[:4]}  # the 5th gets a wrong answer
    out = tmp_path / "ep"
    args = ["code", "evaluate", "--endpoint", None, "--endpoint-model", "tiny", "--limit", "5",
            "--n-samples", "2", "--temperature", "0.8", "--batch-size", "4", "-o", str(out)]
    with _Server(answers) as srv:
        args[3] = srv.url
        assert main(args) == 0
        first = json.loads((out / "results.json").read_text())
        assert first["humaneval"]["pass@1"] == pytest.approx(0.8)
        req = srv.requests[0]
        assert req["path"] == "/v1/completions" and req["model"] == "tiny" and req["n"] == 2
        assert len(req["stop"]) <= 4 and req["temperature"] == 0.8
        n_requests = len(srv.requests)
        gens = out / "generations_humaneval.jsonl"
        assert len(gens.read_text().splitlines()) == 10
        # an interrupted run: the last problem's rows are gone and a torn line is left behind
        lines = gens.read_text().splitlines(keepends=True)
        gens.write_text("".join(lines[:8]) + lines[8][:20])
        (out / "executions_humaneval.jsonl").unlink()
        assert main(args) == 0
        assert len(srv.requests) == n_requests + 1  # only the missing problem was generated again
        assert json.loads((out / "results.json").read_text())["humaneval"] == first["humaneval"]
        # a finished run reruns without generating anything
        assert main(args) == 0
        assert len(srv.requests) == n_requests + 1
        # other generation settings into the same folder are refused
        assert main([*args[:-2], "--seed", "3", "-o", str(out)]) == 2


def test_endpoint_infilling(sandbox: Sandbox, tmp_path: Path, data_dir: Path) -> None:
    probs = get_task("humaneval-fim-single-line").load(data_dir).problems[:3]
    answers = {p.prompt: p.reference for p in probs}
    with _Server(answers) as srv:
        rc = main(["code", "evaluate", "--endpoint", srv.url, "--tasks", "humaneval-fim-single-line",
                   "--limit", "3", "-o", str(tmp_path / "fim")])
        assert rc == 0
        assert all("suffix" in r for r in srv.requests)
    res = json.loads((tmp_path / "fim" / "results.json").read_text())
    assert res["humaneval-fim-single-line"]["pass@1"] == 1.0
    assert res["humaneval-fim-single-line"]["exact_match"] == 1.0


def test_refuses_without_bwrap_unless_unsafe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sandbox_mod, "find_bwrap", lambda: None)
    p = get_task("humaneval").load().problems[0]
    f = tmp_path / "s.jsonl"
    f.write_text(json.dumps({"task_id": p.task_id, "completion": p.reference}) + "\n")
    assert main(["code", "evaluate", "--samples", str(f), "-o", str(tmp_path / "a")]) == 2
    assert "--unsafe-local-execution" in capsys.readouterr().err
    with pytest.warns(UserWarning, match="UNSAFE"):
        rc = main(["code", "evaluate", "--samples", str(f), "-o", str(tmp_path / "b"), "--unsafe-local-execution"])
    assert rc == 0
    assert "WITHOUT network isolation" in capsys.readouterr().err
    res = json.loads((tmp_path / "b" / "results.json").read_text())
    assert res["humaneval"]["pass@1"] == 1.0 and res["metadata"]["sandbox"]["isolated"] is False
