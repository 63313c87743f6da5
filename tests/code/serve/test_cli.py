"""`domainfm code serve` as a user runs it: one ready line with the URL, SIGTERM drains (running requests
finish, then exit 0), a bad folder is one line on stderr and a non-zero exit."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

try:  # the HTTP client the installed `openai` package is built on
    import httpx2 as httpx
except ImportError:  # pragma: no cover
    import httpx


def _serve(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "DOMAINFM_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "domainfm", "code", "serve", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_bad_model_folder_is_one_line(tmp_path: Path) -> None:
    proc = _serve([str(tmp_path)])
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    lines = [x for x in err.strip().splitlines() if x]
    assert len(lines) == 1 and "not a model folder" in lines[0]


def test_ready_line_and_sigterm_drains(serve_model: Path) -> None:
    proc = _serve([str(serve_model), "--port", "0", "--shutdown-timeout", "20"])
    try:
        url = None
        deadline = time.monotonic() + 120
        while url is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            assert line or proc.poll() is None, "server exited before it was ready"
            if m := re.search(r"ready at (http://[\d.]+:\d+)/v1", line):
                url = m.group(1)
        assert url is not None
        body = {"model": "tiny", "prompt": "def f(x):\n", "max_tokens": 120, "temperature": 0.5, "seed": 1}
        result: dict[str, Any] = {}
        t = threading.Thread(target=lambda: result.update(r=httpx.post(url + "/v1/completions", json=body,
                                                                       timeout=120)))
        t.start()
        while httpx.get(url + "/health").json()["running"] == 0:  # the request is in the batch
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        t.join(60)
        assert result["r"].status_code == 200  # the running request finished
        assert result["r"].json()["usage"]["completion_tokens"] >= 1
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
