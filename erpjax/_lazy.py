"""Lazy package faces: a package lists its public names, and each is imported on first use.

A library user who imports one piece (`from erpjax.routing import route`) then pays only for the
modules behind it, not for orbax, matplotlib or transformers behind its siblings (the pattern of
gemma's `epy.lazy_api_imports`, with PEP 562 module `__getattr__`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, tuple[str, ...]]
                 ) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
  """`__getattr__`, `__dir__` and `__all__` for `package`.

  Args:
    package: the package's `__name__`.
    exports: submodule (relative, e.g. "_schema") -> the public names it defines. A name may be
      "name as alias" to export it under another name.

  Usage, in a package's __init__.py:
    __getattr__, __dir__, __all__ = lazy_exports(__name__, {"_schema": ("RoutingDataset",)})
  """
  where: dict[str, tuple[str, str]] = {}
  for module, names in exports.items():
    for entry in names:
      name, _, alias = entry.partition(" as ")
      public = alias or name
      if public in where:
        raise ValueError(f"{package}: {public!r} exported twice")
      where[public] = (module, name)
  namespace = importlib.import_module(package).__dict__

  def __getattr__(name: str) -> Any:
    if name not in where:
      raise AttributeError(f"module {package!r} has no attribute {name!r}")
    module, attribute = where[name]
    value = getattr(importlib.import_module(f"{package}.{module}"), attribute)
    namespace[name] = value  # Later lookups skip __getattr__.
    return value

  def __dir__() -> list[str]:
    return sorted(set(namespace) | set(where))

  return __getattr__, __dir__, sorted(where)
