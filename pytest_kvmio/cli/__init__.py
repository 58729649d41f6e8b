"""The `kvmio` command: lab management, fio result inspection, baselines, the rule catalogue, A/B experiments, fixes,
offline linting, the results history."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from pytest_kvmio import __version__
from pytest_kvmio.cli import ab as ab_cli
from pytest_kvmio.cli import baseline as baseline_cli
from pytest_kvmio.cli import facts as facts_cli
from pytest_kvmio.cli import fio as fio_cli
from pytest_kvmio.cli import fix as fix_cli
from pytest_kvmio.cli import history as history_cli
from pytest_kvmio.cli import lint as lint_cli
from pytest_kvmio.cli import rules as rules_cli
from pytest_kvmio.errors import CommandError, InputError

__all__ = ["CommandError", "build_parser", "main"]

#: pytest's exit code for usage errors; kvmio's commands use it for bad inputs too, so pipelines see one meaning.
USAGE_ERROR = 4


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are kvmio's InputError: `ERROR: ...`, then the usage, exit 4, as pytest's do
    (subcommands inherit it).

    A subcommand made with `passthrough=DEST` keeps the arguments after `--` as they are, in `DEST` (a list),
    instead of parsing them as its own (`kvmio lint PATH -- -x` hands `-x` to pytest).
    """

    def __init__(self, *args: Any, passthrough: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.passthrough = passthrough

    def parse_known_args(  # type: ignore[override]  # the overloads of typeshed, one signature here
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        if self.passthrough is None:
            return super().parse_known_args(args, namespace)
        own = list(sys.argv[1:] if args is None else args)
        rest: list[str] = []
        if "--" in own:
            at = own.index("--")
            own, rest = own[:at], own[at + 1:]
        parsed, unknown = super().parse_known_args(own, namespace)
        setattr(parsed, self.passthrough, rest)
        return parsed, unknown

    def error(self, message: str) -> NoReturn:
        raise InputError(message, command=self.prog, usage=self.format_usage())


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of every `kvmio` subcommand."""
    parser = _Parser(prog="kvmio", description=__doc__)
    parser.add_argument("--version", action="version", version=f"kvmio {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    # Imported here, not at the top: the lab needs libvirt-python, which the other commands don't.
    from pytest_kvmio.cli import lab as lab_cli

    lab_cli.add_parser(sub)
    fio_cli.add_parser(sub)
    baseline_cli.add_parser(sub)
    rules_cli.add_parser(sub)
    ab_cli.add_parser(sub)
    fix_cli.add_parser(sub)
    lint_cli.add_parser(sub)
    facts_cli.add_parser(sub)
    history_cli.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run `kvmio`; each subparser sets `func(args) -> int`."""
    parser = build_parser()
    command = parser.prog
    try:
        args = parser.parse_args(argv)
        command = f"{parser.prog} {args.command}"
        return int(args.func(args) or 0)
    except InputError as exc:
        print(f"ERROR: {exc.command or command}: {exc}", file=sys.stderr, end="\n" + exc.usage)
        return USAGE_ERROR
    except CommandError as exc:
        print(f"{command}: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # output piped into `head` and closed early: not an error
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print(f"{command}: interrupted", file=sys.stderr)
        return 130

