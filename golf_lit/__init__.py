"""golf-lit: PyTorch Lightning / Fabric tooling for the OpenAI Parameter Golf challenge."""

__version__ = "0.1.0"


def _checkout_callbacks() -> None:
    """In a source checkout, ``golf_lit.callbacks`` is the top-level ``callbacks/`` folder (installs map it)."""
    import importlib.abc
    import importlib.util
    import sys
    from pathlib import Path

    here = Path(__file__).resolve().parent
    src = here.parent / "callbacks"
    if (here / "callbacks").is_dir() or not (src / "__init__.py").is_file():
        return

    class Finder(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name != "golf_lit.callbacks":
                return None
            return importlib.util.spec_from_file_location(
                name, src / "__init__.py", submodule_search_locations=[str(src)]
            )

    sys.meta_path.append(Finder())


_checkout_callbacks()
