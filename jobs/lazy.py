"""A package whose public names load on first use (PEP 562): `jobs` and `cronwarden` both, so that importing
either costs nothing until a name is used (the quick path imports `jobs` modules on every tick)."""

from __future__ import annotations

from importlib import import_module

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on a tick (see jobs/__init__.py)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


def exports(package: str, homes: dict[str, str], namespace: dict[str, Any]
            ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The package's `__getattr__` and `__dir__`: each name of `homes` is imported from its module the first
    time it is asked for, then kept in the package's namespace."""

    def attribute(name: str) -> Any:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(home), name)
        namespace[name] = value
        return value

    def names() -> list[str]:
        return sorted(set(namespace) | set(homes))

    return attribute, names
