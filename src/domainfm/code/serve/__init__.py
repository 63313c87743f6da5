"""code.serve: an OpenAI-compatible completions server (fill-in-the-middle, streaming, continuous batching).

`domainfm code serve MODEL_DIR` (cli.py) runs the FastAPI app (app.py) over the scheduler (engine.py);
see docs/serve.md.
"""
