"""In a source checkout, ``golf_lit.callbacks`` is the top-level ``callbacks/`` folder.

Installs map that folder to ``golf_lit/callbacks`` (see setup.py). When the checkout's own ``golf_lit/`` is the
one imported (an editable install, or ``python -m pytest`` from the repository root, which puts the checkout
first on ``sys.path`` even over a regular install), this finder resolves ``golf_lit.callbacks`` to the sibling
folder. It is appended to ``sys.meta_path``, so an installed ``golf_lit/callbacks`` always wins, and it answers
for that one name only. Training-only: not part of the counted scorer code.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent if "__file__" in globals() else None  # None: packed into one file
_SOURCE = _PACKAGE.parent / "callbacks" if _PACKAGE is not None else None


class _CheckoutCallbacks(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != "golf_lit.callbacks":
            return None
        return importlib.util.spec_from_file_location(
            name, _SOURCE / "__init__.py", submodule_search_locations=[str(_SOURCE)]
        )


if _PACKAGE is not None and not (_PACKAGE / "callbacks").is_dir() and (_SOURCE / "__init__.py").is_file():
    if not any(isinstance(f, _CheckoutCallbacks) for f in sys.meta_path):
        sys.meta_path.append(_CheckoutCallbacks())
