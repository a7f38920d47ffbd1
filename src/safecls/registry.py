"""One registry type for every place users pick among implementations (attacks, judges, schedules,
labelers, benchmarks). An unknown name lists the valid ones."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from safecls.errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, type[T]] = {}

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        def add(cls: type[T]) -> type[T]:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered by {self._items[name].__qualname__}")
            cls.name = name  # type: ignore[attr-defined]
            self._items[name] = cls
            return cls

        return add

    def get(self, name: str) -> type[T]:
        if name not in self._items:
            near = difflib.get_close_matches(name, list(self._items), n=1)
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}; valid: {', '.join(sorted(self._items))}"
                + (f". Did you mean {near[0]!r}?" if near else "")
            )
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
