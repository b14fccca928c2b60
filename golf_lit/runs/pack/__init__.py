"""Packed code: the scorer's modules as one minified, compressed, self-extracting file (docs/top-stack.md §5.8)."""
