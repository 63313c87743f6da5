"""A small, typed registry (the timm way): register / get / names. Unknown names list what exists."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from domainfm.core.errors import UserError

T = TypeVar("T")


class UnknownNameError(UserError, KeyError):
    """Raised by `Registry.get` for a name that was never registered."""

    def __str__(self) -> str:  # KeyError would repr() the message; keep it readable
        return str(self.args[0])


class Registry(Generic[T]):
    """Maps names to objects of one family (encoders, MIL models, eval tasks, curation steps...)."""

    def __init__(self, family: str) -> None:
        self.family = family
        self._items: dict[str, T] = {}
        self._help: dict[str, str] = {}

    def register(self, name: str, obj: T | None = None, *, help: str = "") -> Callable[[T], T] | T:
        """Use as `@REG.register("name")` or `REG.register("name", obj)`."""

        def add(item: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.family} {name!r} is already registered")
            self._items[name] = item
            doc = help or (getattr(item, "__doc__", None) or "").strip().splitlines()
            self._help[name] = doc if isinstance(doc, str) else (doc[0] if doc else "")
            return item

        return add(obj) if obj is not None else add

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(self.names()) or "(none)"
            raise UnknownNameError(f"unknown {self.family} {name!r}; known: {known}") from None

    def names(self) -> list[str]:
        return sorted(self._items)

    list = names  # timm-style alias

    def describe(self, name: str) -> str:
        self.get(name)
        return self._help.get(name, "")

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
