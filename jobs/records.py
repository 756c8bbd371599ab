"""What `@dataclass` generates for a record class, written once instead of compiled for each class.

`@dataclass` compiles the source of every method it adds (__init__, __repr__, __eq__, __hash__ and, when
frozen, __setattr__ and __delattr__) each time the class is created: about a millisecond per class, paid at
import by every process, a tick that does nothing included. The framework's own records on that path
(jobs.config, jobs.schedule, jobs.spec, ...) are declared `@dataclass(init=False, repr=False, eq=False)`
over one of these bases, with an __init__ of their own: they keep their fields for dataclasses.fields,
replace and asdict and for the type checker, and behave as `@dataclass` (Record) or
`@dataclass(frozen=True)` (FrozenRecord) would make them.
"""

from __future__ import annotations

from dataclasses import FrozenInstanceError, fields
from reprlib import recursive_repr

_NAMES: dict[type, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {}


def _names(cls: type) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """The fields compared, hashed and shown, as @dataclass picks them."""
    found = _NAMES.get(cls)
    if found is None:
        every = fields(cls)
        found = _NAMES[cls] = (tuple(f.name for f in every if f.compare),
                               tuple(f.name for f in every if (f.compare if f.hash is None else f.hash)),
                               tuple(f.name for f in every if f.repr))
    return found


class Record:
    """`@dataclass`'s __eq__ and __repr__; defining __eq__ leaves __hash__ None, as @dataclass does for a
    mutable record."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        compared = _names(self.__class__)[0]
        return tuple(getattr(self, name) for name in compared) == tuple(getattr(other, name) for name in compared)

    @recursive_repr()
    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in _names(self.__class__)[2])
        return f"{self.__class__.__qualname__}({shown})"


class FrozenRecord(Record):
    """`@dataclass(frozen=True)`'s methods besides __init__: assigning a field raises FrozenInstanceError.
    The subclass's __init__ sets its fields with object.__setattr__, as the generated one does."""

    __slots__ = ()

    def __hash__(self) -> int:
        return hash(tuple(getattr(self, name) for name in _names(self.__class__)[1]))

    def __setattr__(self, name: str, value: object) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")
