"""A small name -> object registry (after timm's ``register_model`` / ``create_model`` / ``list_models``).

Entries are either objects registered with the `Registry.register` decorator / `Registry.add`, or lazy
``"package.module:attr"`` strings imported on first `Registry.get` (so a registry of backends does not import
onnxruntime or TFLite until one is asked for). An unknown name raises `UnknownNameError`, whose message
lists the known names; it is an `InputError` (the CLI prints it and exits 2) and a `KeyError` (for ``except KeyError``
callers and mapping-like use).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from supernet.errors import InputError

__all__ = ["Registry", "UnknownNameError", "import_target"]

T = TypeVar("T")


class UnknownNameError(InputError, KeyError):
    """A name a registry does not hold. ``str(e)`` is the plain message (no `KeyError` repr quoting)."""

    def __init__(self, message: str, *, kind: str = "", name: str = "", known: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.kind = kind
        self.name = name
        self.known = known

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def import_target(spec: str) -> Any:
    """Import ``"package.module:attr"`` and return the attribute."""
    module, sep, attr = spec.partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"import target {spec!r}: expected 'package.module:attr'")
    return getattr(importlib.import_module(module), attr)


class Registry(Generic[T]):
    """Names -> objects (classes, factories, values) of one kind, e.g. search spaces or latency backends.

    ``kind`` is the human word used in messages ("search space", "backend"; ``plural`` if not ``kind + "s"``);
    ``error`` a subclass of `UnknownNameError` to raise instead (e.g. `UnknownBackendError`). Names keep their
    registration order in `names`. Lazy entries (``"module:attr"``) are imported once, on first `get`;
    an import error propagates unchanged (it says which optional dependency is missing).
    """

    def __init__(self, kind: str, *, plural: str | None = None,
                 error: type[UnknownNameError] | None = None) -> None:
        self.kind = kind
        self.plural = plural or f"{kind}s"
        self._error = error or UnknownNameError
        self._entries: dict[str, T | str] = {}  # as registered (lazy entries stay strings)
        self._loaded: dict[str, T] = {}
        self._aliases: dict[str, str] = {}

    def add(self, name: str, target: T | str, *, aliases: tuple[str, ...] = (),
            replace: bool = False) -> None:
        """Register ``target`` (an object, or a lazy ``"module:attr"`` string) as ``name`` and ``aliases``."""
        for n in (name, *aliases):
            if not replace and (n in self._entries or n in self._aliases):
                raise ValueError(f"{self.kind} {n!r} is already registered")
        self._entries[name] = target
        self._loaded.pop(name, None)
        for a in aliases:
            self._aliases[a] = name

    def register(self, name: str, *, aliases: tuple[str, ...] = (),
                 replace: bool = False) -> Callable[[T], T]:
        """Decorator form of `add`: ``@REGISTRY.register("name")`` above a class or function."""

        def deco(obj: T) -> T:
            self.add(name, obj, aliases=aliases, replace=replace)
            return obj

        return deco

    def canonical(self, name: str) -> str:
        """The registered name for ``name`` or one of its aliases; `UnknownNameError` otherwise."""
        if name in self._entries:
            return name
        if name in self._aliases:
            return self._aliases[name]
        known = tuple(self.names())
        listed = ", ".join(known) or "(none)"
        raise self._error(f"unknown {self.kind} {name!r}; known {self.plural}: {listed}",
                          kind=self.kind, name=name, known=known)

    def get(self, name: str) -> T:
        """The object registered as ``name`` (imported now if it was registered lazily)."""
        key = self.canonical(name)
        if key in self._loaded:
            return self._loaded[key]
        target = self._entries[key]
        if isinstance(target, str) and self._is_lazy(target):
            obj: T = import_target(target)
            self._loaded[key] = obj
            return obj
        return target  # type: ignore[return-value]

    def spec(self, name: str) -> T | str:
        """What was registered as ``name``: the lazy ``"module:attr"`` string (not imported), or the object."""
        return self._entries[self.canonical(name)]

    def create(self, name: str, /, **kwargs: Any) -> Any:
        """Call the registered factory/class with ``kwargs`` and return the result."""
        factory = self.get(name)
        if not callable(factory):
            raise TypeError(f"{self.kind} {name!r} is not callable; use get()")
        return factory(**kwargs)

    def names(self) -> list[str]:
        """Registered names (aliases excluded), in registration order."""
        return list(self._entries)

    def is_loaded(self, name: str) -> bool:
        """Whether ``name``'s lazy entry has been imported (always true for objects registered directly)."""
        key = self.canonical(name)
        target = self._entries[key]
        return key in self._loaded or not (isinstance(target, str) and self._is_lazy(target))

    def __getitem__(self, name: str) -> T:
        """``registry[name]`` is `get` (so a registry can replace a plain name -> object dict)."""
        return self.get(name)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name in self._entries or name in self._aliases)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"

    @staticmethod
    def _is_lazy(target: str) -> bool:
        module, sep, attr = target.partition(":")
        return (bool(sep) and attr.isidentifier()
                and all(p.isidentifier() for p in module.split(".")))
