"""The shared registry helper and error types: lazy entries, decorator, one error type listing known names."""

from __future__ import annotations

import sys

import pytest

from supernet.errors import InputError
from supernet.registry import Registry, UnknownNameError


def test_input_error_is_a_value_error() -> None:
    assert issubclass(InputError, ValueError)
    with pytest.raises(ValueError, match="--space"):
        raise InputError("--space 'x': expected one of a, b")


def test_register_get_create_names_in_registration_order() -> None:
    reg: Registry[type] = Registry("widget")

    @reg.register("b")
    class B:
        def __init__(self, *, size: int = 1) -> None:
            self.size = size

    @reg.register("a", aliases=("alpha",))
    class A:
        pass

    assert reg.names() == ["b", "a"]
    assert reg.get("b") is B and reg.get("alpha") is A
    assert reg.create("b", size=3).size == 3
    assert "alpha" in reg and "c" not in reg and len(reg) == 2 and list(reg) == ["b", "a"]
    assert reg.canonical("alpha") == "a"


def test_lazy_entry_is_imported_on_first_get_only() -> None:
    reg: Registry[object] = Registry("thing")
    reg.add("dumps", "json:dumps")
    reg.add("fractions", "fractions:Fraction")
    sys.modules.pop("fractions", None)
    assert not reg.is_loaded("fractions") and reg.spec("fractions") == "fractions:Fraction"
    assert "fractions" not in sys.modules  # add() does not import
    import json

    assert reg.get("dumps") is json.dumps
    frac = reg.create("fractions", numerator=1, denominator=2)
    assert str(frac) == "1/2" and reg.is_loaded("fractions")


def test_unknown_name_lists_the_known_names_and_is_plain_text() -> None:
    reg: Registry[object] = Registry("search space")
    reg.add("mnist", object())
    reg.add("ofa-mbv3", object())
    with pytest.raises(UnknownNameError) as info:
        reg.get("ofa")
    e = info.value
    assert str(e) == "unknown search space 'ofa'; known search spaces: mnist, ofa-mbv3"  # no KeyError repr quoting
    assert isinstance(e, InputError) and isinstance(e, KeyError) and isinstance(e, ValueError)
    assert (e.kind, e.name, e.known) == ("search space", "ofa", ("mnist", "ofa-mbv3"))
    with pytest.raises(KeyError):
        reg.create("nope")


def test_duplicate_names_are_refused_unless_replaced() -> None:
    reg: Registry[int] = Registry("number")
    reg.add("one", 1, aliases=("uno",))
    with pytest.raises(ValueError, match="already registered"):
        reg.add("one", 2)
    with pytest.raises(ValueError, match="already registered"):
        reg.add("uno", 2)
    reg.add("one", 3, replace=True)
    assert reg.get("one") == 3


def test_a_lazy_entry_whose_module_is_missing_raises_the_import_error() -> None:
    reg: Registry[object] = Registry("backend")
    reg.add("ghost", "no_such_module_hwnas:Thing")
    with pytest.raises(ImportError):
        reg.get("ghost")
    with pytest.raises(UnknownNameError):
        reg.is_loaded("nobody")


def test_a_registry_can_raise_its_own_subclass_and_plural() -> None:
    class UnknownPolicyError(UnknownNameError):
        pass

    reg: Registry[object] = Registry("policy", plural="policies", error=UnknownPolicyError)
    reg.add("static", object())
    with pytest.raises(UnknownPolicyError, match=r"^unknown policy 'x'; known policies: static$"):
        reg.get("x")
