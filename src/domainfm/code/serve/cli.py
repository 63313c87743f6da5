"""`domainfm code serve MODEL_DIR`: an OpenAI-compatible completions server (FIM, streaming, batching)."""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from domainfm.code.serve.app import ServeConfig


def register(app: typer.Typer) -> None:
    """Add `serve` to the code app."""

    @app.command("serve")
    def serve(
        model: Path = typer.Argument(..., help="model folder AutoModelForCausalLM loads (with its tokenizer)"),
        host: str = typer.Option("127.0.0.1", "--host", help="address to listen on"),
        port: int = typer.Option(8000, "--port", help="port (0 = any free port)"),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N"),
        dtype: str = typer.Option("auto", "--dtype", help="auto (bf16 on CUDA, fp32 on CPU), float32, bfloat16, "
                                                           "float16"),
        max_batch: int = typer.Option(32, "--max-batch", help="sequences decoded together"),
        max_queue: int = typer.Option(256, "--max-queue", help="sequences waiting before 429"),
        max_tokens_limit: int = typer.Option(None, "--max-tokens-limit",
                                             help="largest max_tokens accepted (default: the model's context)"),
        model_name: str = typer.Option(None, "--model-name", help="the `model` id clients send (default: the "
                                                                  "folder name)"),
        shutdown_timeout: float = typer.Option(30.0, "--shutdown-timeout",
                                               help="seconds SIGTERM waits for running requests"),
        threads: int = typer.Option(None, "--threads", help="torch CPU threads (default: torch's; 1 on a busy, "
                                                            "shared machine)"),
        trace_index: Path = typer.Option(None, "--trace-index", help="a `code index` folder: enables POST "
                                         "/v1/trace and `\"trace\": true` on completions"),
    ) -> None:
        """Serve POST /v1/completions (OpenAI legacy API, `suffix` = fill-in-the-middle), /v1/models,
        /health and /metrics, with continuous batching."""
        from domainfm.code.serve.app import ServeConfig
        from domainfm.core.errors import UserError, require

        if not (model / "config.json").is_file():
            raise UserError(f"{model}: not a model folder (no config.json)")
        if dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise UserError(f"--dtype must be auto, float32, bfloat16 or float16 (got {dtype})")
        if max_batch < 1 or max_queue < 1 or (max_tokens_limit is not None and max_tokens_limit < 1):
            raise UserError("--max-batch, --max-queue and --max-tokens-limit must be >= 1")
        if trace_index is not None:
            from domainfm.code.attribution.index import read_manifest

            read_manifest(trace_index)  # a clear error now, not after the model has loaded
        require("fastapi", "serve")
        require("uvicorn", "serve")
        if threads is not None:
            if threads < 1:
                raise UserError("--threads must be >= 1")
            require("torch", "code").set_num_threads(threads)
        run(ServeConfig(model_dir=model, host=host, port=port, device=device, dtype=dtype, max_batch=max_batch,
                        max_queue=max_queue, max_tokens_limit=max_tokens_limit, model_name=model_name,
                        shutdown_timeout=shutdown_timeout, trace_index=trace_index))


def run(cfg: ServeConfig) -> None:
    """Run uvicorn; print one line once the model is loaded and the socket listens; drain on SIGTERM."""
    import uvicorn

    from domainfm.code.serve.app import create_app
    from domainfm.core.errors import UserError

    app = create_app(cfg)
    state = app.state.serve

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: object) -> None:  # SIGTERM / SIGINT: stop taking requests
            state.draining = True
            super().handle_exit(sig, frame)
            # uvicorn re-raises the signal after its graceful shutdown (exit status -15); a drained
            # server exits 0 instead
            if isinstance(getattr(self, "_captured_signals", None), list):
                self._captured_signals.clear()

    server = Server(uvicorn.Config(app, host=cfg.host, port=cfg.port, log_level="warning",
                                   timeout_graceful_shutdown=int(cfg.shutdown_timeout)))

    def announce() -> None:
        while not server.should_exit:
            if state.load_error:
                print(f"domainfm serve: cannot load {cfg.model_dir}: {state.load_error}",
                      file=sys.stderr, flush=True)
                server.should_exit = True
                return
            if state.ready.wait(0.1) and server.started:
                sock = server.servers[0].sockets[0].getsockname() if server.servers else (cfg.host, cfg.port)
                print(f"domainfm serve: ready at http://{sock[0]}:{sock[1]}/v1 (model {state.model_name!r}, "
                      f"device {state.gen.device})", file=sys.stderr, flush=True)
                return

    threading.Thread(target=announce, name="domainfm-serve-announce", daemon=True).start()
    server.run()
    if state.load_error:
        raise UserError(f"{cfg.model_dir}: cannot load the model ({state.load_error})")
