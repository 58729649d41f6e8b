"""Domain XML files for offline lint: paths to files, files to domains, and target ids that stay put.

A lint reads whatever a template tree holds: folders (recursively), files, and globs the shell did not
expand. Each file is read on its own, so one that can't be read or parsed is reported as a problem and
every other file is still judged. A file may hold several <domain>s; a domain without <name> (a template
that a tool fills at deploy time) is judged under its file's name.

Offline target ids carry the file's path relative to the folder given (a file given: its name) and the
domain's name, `offline/web/db.xml:db01/vda`, so an id never depends on what else is linted in the run.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path

from pytest_kvmio.model.domain import Domain, DomainXMLError, domain_of, parse_documents

_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class XmlFile:
    """One input file: where it is, and the path its target ids carry."""

    path: Path
    #: POSIX path relative to the folder given (for a file given: its name).
    rel: str


@dataclass(frozen=True)
class FileProblem:
    """A file kvmio could not judge, and why (the reason names file, line and what is wrong)."""

    path: str
    rel: str
    reason: str


def xml_files(paths: list[str]) -> list[XmlFile]:
    """Expand files, folders (their `*.xml`, recursively, sorted) and globs into input files.

    DomainXMLError (a usage error) for a path that does not exist, a folder or glob without any *.xml,
    or two inputs whose ids would be the same.
    """
    found: dict[Path, XmlFile] = {}
    for raw in paths:
        for path in _expand(raw):
            if path.is_dir():
                files = sorted(p for p in path.rglob("*.xml") if p.is_file())
                if not files:
                    raise DomainXMLError(f"{raw}: directory holds no *.xml file (subfolders searched too)")
                for file in files:  # a symlink is an input of its own (not its target's twin): no resolve()
                    found.setdefault(_absolute(file), XmlFile(file, file.relative_to(path).as_posix()))
            elif path.is_file():
                found.setdefault(_absolute(path), XmlFile(path, path.name))
            else:
                raise DomainXMLError(f"{raw}: no such file or directory")
    by_rel: dict[str, XmlFile] = {}
    for item in found.values():
        other = by_rel.setdefault(item.rel, item)
        if other is not item:
            raise DomainXMLError(
                f"{other.path} and {item.path} would both be judged as '{item.rel}' (target ids carry the path "
                "relative to the folder given); pass their common parent folder instead, or lint them in separate runs"
            )
    return list(found.values())


def _absolute(path: Path) -> Path:
    """Return the path made absolute and normalised, without following symlinks (the same file given twice counts once)."""
    return Path(os.path.normpath(path.absolute()))


def _expand(raw: str) -> list[Path]:
    path = Path(raw)
    if path.exists() or not _GLOB_CHARS & set(raw):
        return [path]
    matches = sorted(glob.glob(raw, recursive=True))
    if not matches:
        raise DomainXMLError(f"{raw}: the pattern matches no file or directory")
    return [Path(m) for m in matches]


def read_xml_file(file: XmlFile, host: str = "offline") -> list[Domain]:
    """Return the domains of one file, each labelled with its stable id; DomainXMLError when it can't be judged."""
    try:
        data = file.path.read_bytes()
    except OSError as exc:
        raise DomainXMLError(f"{file.path}: cannot read: {exc.strerror}") from None
    source = str(file.path)
    roots = parse_documents(data, source=source)
    domains: list[Domain] = []
    for index, root in enumerate(roots, start=1):
        stand_in = file.path.stem if len(roots) == 1 else f"{file.path.stem}-{index}"
        domain = domain_of(root, source=source, host=host, name=stand_in)
        if not (root.findtext("name") or "").strip():
            domain.note = (f"a domain without <name> in {file.rel} (line {root.sourceline}): judged as '{stand_in}', "
                           "its file's name")
        domains.append(domain)
    seen: dict[str, int] = {}
    for domain in domains:
        seen[domain.name] = seen.get(domain.name, 0) + 1
        repeat = f"@{seen[domain.name]}" if seen[domain.name] > 1 else ""
        domain.label = f"{file.rel}:{domain.name}{repeat}"
    return domains


def load_xml_files(paths: list[str], host: str = "offline") -> tuple[list[Domain], list[FileProblem]]:
    """Read every input file; return the domains and the files that could not be judged (with why).

    DomainXMLError only for usage errors (see `xml_files`).
    """
    domains: list[Domain] = []
    problems: list[FileProblem] = []
    for file in xml_files(paths):
        try:
            domains.extend(read_xml_file(file, host))
        except DomainXMLError as exc:
            problems.append(FileProblem(str(file.path), file.rel, str(exc)))
    return domains, problems


def load_domain_files(paths: list[str]) -> list[Domain]:
    """Read every domain of the input files; the first file that can't be judged raises DomainXMLError."""
    domains, problems = load_xml_files(paths)
    if problems:
        raise DomainXMLError(problems[0].reason)
    return domains
