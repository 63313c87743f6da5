from __future__ import annotations

import pytest

from domainfm.core.errors import UserError
from domainfm.core.registry import Registry, UnknownNameError


def test_register_get_list() -> None:
    reg: Registry[type] = Registry("widget")

    @reg.register("b")
    class B:
        """A b widget."""

    reg.register("a", int)
    assert reg.names() == ["a", "b"] == reg.list()
    assert reg.get("b") is B
    assert reg.describe("b") == "A b widget."
    assert "a" in reg and len(reg) == 2


def test_unknown_name_lists_known() -> None:
    reg: Registry[int] = Registry("encoder")
    reg.register("resnet18", 1)
    reg.register("vit", 2)
    with pytest.raises(UnknownNameError) as exc:
        reg.get("resnet")
    assert str(exc.value) == "unknown encoder 'resnet'; known: resnet18, vit"
    assert isinstance(exc.value, UserError)


def test_duplicate_rejected() -> None:
    reg: Registry[int] = Registry("x")
    reg.register("a", 1)
    with pytest.raises(ValueError):
        reg.register("a", 2)
