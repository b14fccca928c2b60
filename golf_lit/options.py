"""Command-line options declared once, as dataclass fields, and parsed by jsonargparse.

Every ``golf-lit`` subcommand (``fit`` through LightningCLI, the others through this module) builds its parser
from dataclasses: a field is an option ``--<field>`` (``--<section>.<field>`` under a nested key) whose type,
default and help text (the field's attribute docstring, shown by ``-h``) come from the dataclass, so a default
cannot drift between the library and its command line. Two argparse habits are kept so that existing command
lines still work: a ``bool`` field is a flag (``--overwrite`` means ``--overwrite true``; ``--overwrite false``
also parses) and a ``list[X]`` field takes space-separated values (``--zstd_levels 16 1 17``).

Options are spelled with underscores, like the fields. The ``golf-lit`` dispatcher (``golf_lit.cli``) rewrites
hyphenated spellings (``--val-files``) to the spelling a command declares, once, before the command parses.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from jsonargparse import ArgumentError, ArgumentParser, Namespace


class UsageError(ValueError):
    """A command line that does not parse; the one-line message names the option."""


def _docs(cls: type) -> dict[str, str]:
    """Field name -> its attribute docstring (docstring_parser, which jsonargparse uses for the same purpose)."""
    import docstring_parser

    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__[:-1]):  # base classes first, so subclasses can re-document a field
        try:
            parsed = docstring_parser.parse_from_object(klass)
        except (OSError, TypeError):  # no source to read (a class made at run time): no help texts
            continue
        out.update({p.arg_name: " ".join((p.description or "").split()) for p in parsed.params})
    return out


def _list_element(hint: Any) -> Any | None:
    """``X`` for ``list[X]`` and ``list[X] | None``; None for any other type."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1:
        hint = args[0]
    if typing.get_origin(hint) is list and len(typing.get_args(hint)) == 1:
        return typing.get_args(hint)[0]
    return None


def command_parser(prog: str, description: str | None = None, epilog: str | None = None) -> ArgumentParser:
    """A jsonargparse parser for a golf-lit subcommand: errors raise (see :func:`parse`), no abbreviated options."""
    return ArgumentParser(prog=prog, description=description, epilog=epilog, exit_on_error=False, allow_abbrev=False)


def add_options(parser: ArgumentParser, cls: type, nested_key: str | None = None, *,
                skip: set[str] | frozenset = frozenset(),
                defaults: dict[str, Any] | None = None, title: str | None = None,
                positional: set[str] | frozenset = frozenset()) -> None:
    """Add one option per field of the dataclass ``cls`` (see the module docstring).

    Args:
        parser: The parser.
        cls: A dataclass whose fields carry type hints and attribute docstrings.
        nested_key: Option prefix (``"quant"`` gives ``--quant.gptq``); None for top-level options.
        skip: Fields that are not options.
        defaults: Defaults that replace the dataclass's (e.g. a command's own choice).
        title: Help-section title (default: the first line of the class docstring).
        positional: Fields that are positional arguments (``golf-lit submit RUN_DIR...``) instead of options.
    """
    hints = typing.get_type_hints(cls)
    docs = _docs(cls)
    group = parser.add_argument_group(title or (cls.__doc__ or cls.__name__).strip().splitlines()[0].rstrip("."))
    for f in dataclasses.fields(cls):
        if f.name in skip or not f.init:
            continue
        hint = hints[f.name]
        kwargs: dict[str, Any] = {"help": docs.get(f.name) or f.name}
        if defaults and f.name in defaults:
            kwargs["default"] = defaults[f.name]
        elif f.default is not dataclasses.MISSING:
            kwargs["default"] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            kwargs["default"] = f.default_factory()
        else:
            kwargs["required"] = True
        element = _list_element(hint)
        if hint is bool:
            kwargs.update(type=bool, nargs="?", const=True)  # `--flag` = `--flag true`, as argparse's store_true
        elif element is not None:
            kwargs.update(type=element, nargs="+")  # `--levels 16 1 17`, as argparse's nargs="+"
        else:
            kwargs["type"] = hint
        if f.name in positional:
            kwargs.pop("required", None)
            group.add_argument(f.name, **kwargs)
        else:
            group.add_argument(f"--{nested_key}.{f.name}" if nested_key else f"--{f.name}", **kwargs)


def one_line(message: str) -> str:
    """A (jsonargparse, often multi-line) message as one line."""
    return " ".join(line.strip() for line in str(message).splitlines() if line.strip())


BOOL_WORDS = frozenset({"true", "false", "yes", "no", "on", "off", "1", "0"})


def _option_actions(parser: ArgumentParser):
    """``(option string, action)`` of ``parser`` and of its subcommands, recursively."""
    yield from parser._option_string_actions.items()
    for action in parser._actions:
        if isinstance(getattr(action, "choices", None), dict):
            for sub in action.choices.values():
                if isinstance(sub, ArgumentParser):
                    yield from _option_actions(sub)


def _flags(parser: ArgumentParser) -> set[str]:
    """The option strings of bool fields, in ``parser`` and its subcommands."""
    return {name for name, action in _option_actions(parser) if action.nargs == "?" and action.const is True}


def parse(parser: ArgumentParser, argv: list[str]) -> Namespace:
    """Parse ``argv``; a usage error raises :class:`UsageError` with a one-line message (``-h`` still exits 0).

    A bool option not followed by true/false is written ``--flag=true`` first, so that it never takes the next
    argument (a positional run folder) as its value.
    """
    flags = _flags(parser)
    argv = [f"{a}=true" if a in flags and (i + 1 == len(argv) or argv[i + 1].lower() not in BOOL_WORDS) else a
            for i, a in enumerate(argv)]
    try:
        return parser.parse_args(argv)
    except ArgumentError as exc:
        raise UsageError(one_line(exc)) from None


def build(cls: type, ns: Namespace, nested_key: str | None = None, **extra: Any) -> Any:
    """The dataclass ``cls`` from the parsed options (its ``__post_init__`` validates them); ``extra`` adds fields."""
    section = ns.get(nested_key) if nested_key else ns
    values = {f.name: section[f.name] for f in dataclasses.fields(cls) if f.init and f.name in section}
    return cls(**{**values, **extra})


def option_names(parser: ArgumentParser) -> set[str]:
    """Every option string of ``parser`` and of its subcommands (what the dispatcher normalizes against)."""
    return {name for name, _ in _option_actions(parser)}


def _is_option(token: str) -> bool:
    """An option token (``--x`` / ``--x=v``), not a value such as ``-1`` or ``"--strategy roundtrip"``."""
    if not token.startswith("-") or " " in token.partition("=")[0]:
        return False
    try:
        float(token)
        return False
    except ValueError:
        return True


def split_args(parser: ArgumentParser, argv: list[str]) -> tuple[list[str], list[str]]:
    """``argv`` split into the options ``parser`` declares (each with its values) and the rest (each unknown option
    with its values), for a command that passes the rest on to another (``seeds`` to ``golf-lit fit``)."""
    known = option_names(parser)
    own: list[str] = []
    rest: list[str] = []
    target = own
    for token in argv:
        if _is_option(token):
            target = own if token.partition("=")[0] in known else rest
        target.append(token)
    return own, rest
