"""Lazy package exports: a package names what it exports and where from, and each name is
imported on first use, so importing one submodule never pulls in its siblings' heavy imports."""

import importlib
from typing import Any, Callable, Mapping


def lazy_exports(package: str, exports: Mapping[str, str], namespace: dict[str, Any]) -> tuple[
    list[str], Callable[[str], Any], Callable[[], list[str]]
]:
    """``__all__``, ``__getattr__`` and ``__dir__`` for ``package``; ``exports`` maps each public
    name to the submodule (relative to the package) that defines it."""
    names = sorted(exports)

    def __getattr__(name: str) -> Any:
        module_name = exports.get(name)
        if module_name is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module_name}"), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return names

    return names, __getattr__, __dir__
