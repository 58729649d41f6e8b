"""`kvmio rules [--json]`: print the rule catalogue (id, level, severity, what it checks, where it applies)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

from pytest_kvmio.verdict.catalogue import RULES


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the `rules` subcommand to the `kvmio` subparsers `sub`."""
    parser = sub.add_parser("rules", help="list the rule catalogue", description=__doc__)
    parser.add_argument("--json", action="store_true", help="print the catalogue as JSON")
    parser.set_defaults(func=run_rules)
    return parser


def run_rules(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Print every catalogue rule, as a table or as JSON."""
    out = out or sys.stdout
    if args.json:
        json.dump([rule.as_dict() for rule in RULES], out, indent=2, ensure_ascii=False)
        out.write("\n")
        return 0
    width = max(len(rule.id) for rule in RULES)
    for rule in RULES:
        out.write(f"{rule.id:<{width}}  {rule.level:<6}  {rule.severity:<8}  {rule.summary}\n")
        out.write(f"{'':<{width}}  applies to: {rule.applies_when}; fix: {rule.fix}\n")
        if rule.cites != "—":
            out.write(f"{'':<{width}}  scope from: {rule.cites}\n")
    return 0
