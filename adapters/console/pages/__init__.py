"""The console's pages: one module per page (or group of pages). Each module has a
``router`` (a FastAPI ``APIRouter``, its paths relative to ``/console``) and may have
``NAV``, its navigation entries (:class:`adapters.console.web.Nav`); adding a page is
adding a module here, nothing to register (docs/console/README.md)."""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType


def modules() -> list[ModuleType]:
    """Every page module, by name (their routes are added in this order)."""
    return [importlib.import_module(f"{__name__}.{info.name}")
            for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name)
            if not info.name.startswith("_")]
