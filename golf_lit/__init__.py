"""golf-lit: PyTorch Lightning / Fabric tooling for the OpenAI Parameter Golf challenge."""

__version__ = "0.1.0"

try:  # a source checkout: golf_lit.callbacks is the top-level callbacks/ folder
    from golf_lit import _checkout  # noqa: F401
except ImportError:
    pass
