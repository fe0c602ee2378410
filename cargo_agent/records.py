"""Light record classes for the compiling path: `@dataclass` and `field(default_factory=...)` as
the modules on that path use them, without importing dataclasses (which pulls in inspect, and
costs more than the rest of a no-op run's own work).

Type checkers see the real `dataclasses` (so fields are checked as usual); at run time the
decorator below builds `__init__`, `__repr__` and `__eq__` from the class's annotations and
defaults. Supported: plain fields, defaults, `field(default_factory=...)`; nothing else (no
frozen, no ordering, no inheritance of fields)."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from dataclasses import dataclass, field
else:
    class _Factory:
        __slots__ = ("make",)

        def __init__(self, make):
            self.make = make

    def field(*, default_factory):
        return _Factory(default_factory)

    def dataclass(cls):
        names = tuple(cls.__dict__.get("__annotations__", {}))  # noqa: RUF063 - inspect is what we avoid
        defaults = {name: cls.__dict__[name] for name in names if name in cls.__dict__}

        def __init__(self, *args, **kwargs):
            if len(args) > len(names):
                raise TypeError(f"{cls.__name__}() takes {len(names)} arguments, got {len(args)}")
            for name, value in zip(names, args, strict=False):
                setattr(self, name, value)
            for name in names[len(args):]:
                if name in kwargs:
                    value = kwargs.pop(name)
                elif name in defaults:
                    default = defaults[name]
                    value = default.make() if isinstance(default, _Factory) else default
                else:
                    raise TypeError(f"{cls.__name__}() missing argument: '{name}'")
                setattr(self, name, value)
            if kwargs:
                raise TypeError(f"{cls.__name__}() got an unexpected argument: '{next(iter(kwargs))}'")

        def __repr__(self):
            return f"{cls.__name__}(" + ", ".join(f"{name}={getattr(self, name)!r}" for name in names) + ")"

        def __eq__(self, other):
            if other.__class__ is not self.__class__:
                return NotImplemented
            return all(getattr(self, name) == getattr(other, name) for name in names)

        cls.__init__ = __init__
        cls.__repr__ = __repr__
        cls.__eq__ = __eq__
        cls.__hash__ = None
        return cls

__all__ = ["dataclass", "field"]
