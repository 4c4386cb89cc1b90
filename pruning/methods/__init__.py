"""Importing this package registers every pruning method in `pruning.method_registry.METHODS`."""

import importlib
import pkgutil

for _m in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_m.name}")
