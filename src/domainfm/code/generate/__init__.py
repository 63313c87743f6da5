"""code.generate: completion and fill-in-the-middle on top of transformers `generate`."""

from domainfm.code.generate.generator import GenerationConfig, Generator, apply_stop

__all__ = ["GenerationConfig", "Generator", "apply_stop"]
