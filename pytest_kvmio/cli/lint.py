"""`kvmio lint PATH...`: lint domain XML offline with the suites shipped inside the package.

Runs pytest in this process over pytest_kvmio.suites (the repository's suites/, installed) with `--domain-xml` for
each PATH (files, folders of *.xml or quoted globs), so it works from any directory after `pip install pytest-kvmio`
and gives the verdicts of `pytest suites/ --domain-xml=PATH` in a checkout. Arguments after `--` go to pytest as
they are (e.g. `-- -q -x`). Exit code: pytest's (0 all passed, 1 a rule failed, 4 a bad PATH or option).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import pytest

import pytest_kvmio.suites
from pytest_kvmio.plugin.options import add_shared

#: The suite of the performance rules, left out: they judge fio results, never domain XML.
PERF_SUITE = "test_perf.py"
#: pytest's warning about a module imported before it could rewrite its asserts.
ALREADY_IMPORTED = "Module already imported so cannot be rewritten"


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the `lint` subcommand to the `kvmio` subparsers `sub` (its arguments after `--` land in `pytest_args`)."""
    parser = sub.add_parser("lint", help="lint domain XML offline with the shipped suites", description=__doc__,
                            passthrough="pytest_args", usage="%(prog)s PATH... [options] [-- PYTEST_ARGS...]")
    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help="domain XML files, folders (their *.xml, recursively) or quoted globs")
    parser.add_argument("--assume", metavar="FACTS",
                        help="host facts to judge against, e.g. kernel=6.1,qemu=7.2,libvirt=9.0 (with --host-facts: "
                        "overrides the facts it names)")
    add_shared(parser.add_argument, ("--host-facts",))
    parser.add_argument("--rule", action="append", metavar="ID",
                        help="only the rules with this id or glob (repeatable), e.g. disk-cache-safe or 'disk-*'")
    parser.add_argument("--json", metavar="FILE", help="write the verdicts as JSON here (pytest's --kvmio-json)")
    parser.set_defaults(func=run_lint)
    return parser


def suites_dir() -> Path:
    """Return the folder of the shipped suites: the package's suites/, or the checkout's in an editable install."""
    return Path(pytest_kvmio.suites.__file__).resolve().parent


def pytest_args(args: argparse.Namespace, rootdir: Path) -> list[str]:
    """Return the pytest command line of `kvmio lint` (options as `--opt=value`, so no value reads as a test path)."""
    suites = suites_dir()
    argv = [str(suites), f"--rootdir={rootdir}", "-p", "no:cacheprovider",
            # Offline XML has no fio results to judge (--fio-results excludes --domain-xml): every perf rule would be
            # not applicable, yet collecting them needs a thresholds/ directory, which a lint anywhere lacks.
            f"--ignore={suites / PERF_SUITE}",
            # This process imported kvmio's modules (and testinfra) before pytest started: nothing to warn about.
            f"-W=ignore:{ALREADY_IMPORTED}:pytest.PytestAssertRewriteWarning"]
    argv += [f"--domain-xml={path}" for path in args.paths]
    if args.assume is not None:
        argv.append(f"--assume={args.assume}")
    argv += [f"--host-facts={saved.path}" for saved in getattr(args, "kvmio_host_facts", None) or []]
    argv += [f"--kvmio-rule={rule}" for rule in args.rule or []]
    if args.json is not None:
        argv.append(f"--kvmio-json={args.json}")
    return argv + list(getattr(args, "pytest_args", None) or [])


def run_lint(args: argparse.Namespace) -> int:
    """Run the shipped suites over the PATHs; return pytest's exit code."""
    # The suites live in the package: pytest's rewritten bytecode would otherwise be written beside them.
    writes_bytecode = sys.dont_write_bytecode
    sys.dont_write_bytecode = True
    try:
        return int(pytest.main(pytest_args(args, Path.cwd())))
    finally:
        sys.dont_write_bytecode = writes_bytecode
