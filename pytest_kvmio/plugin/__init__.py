"""pytest-kvmio's hooks: options, one target list, parametrization, requirements, verdicts."""

from __future__ import annotations

import fnmatch
import logging
import os
import shlex
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any, cast

import pytest

from pytest_kvmio.facts.connection import HostSpec, ansible_host_specs, parse_host_spec
from pytest_kvmio.facts.host import apply_host_facts, assumed_facts
from pytest_kvmio.facts.saved import as_target
from pytest_kvmio.facts.targets import (
    OFFLINE_HOST,
    HostTarget,
    Target,
    filter_domains,
    item_target,
    iter_targets,
    load_host,
)
from pytest_kvmio.model.domain import Domain, DomainXMLError
from pytest_kvmio.model.redact import RedactingFilter
from pytest_kvmio.model.xmlfiles import FileProblem, load_xml_files
from pytest_kvmio.perf.offline import offline_hosts
from pytest_kvmio.perf.session import PerfPlugin
from pytest_kvmio.plugin import fixtures, historysuite, markers, xdist_groups, xmlproblems
from pytest_kvmio.plugin.fixtures import guest_or_reason
from pytest_kvmio.plugin.options import add_options
from pytest_kvmio.report import cpucost
from pytest_kvmio.report import summary as reporting
from pytest_kvmio.runconfig import RUN_CONFIG, RunConfig, run_config
from pytest_kvmio.state import CASES, STATE, KvmioState, describe_left_out
from pytest_kvmio.verdict import catalogue
from pytest_kvmio.verdict.record import (
    EXTRA_FACTS,
    REC_NOTE,
    REC_OUTCOME,
    REC_WAIVER,
    REPORT_ATTR,
    VerdictRecord,
    format_table,
    is_rule_failure,
    item_record,
    message_of,
)

#: Fixtures that make a test per target, from the finest level down.
LEVEL_FIXTURES = (("disk", ("disk", "fio")), ("domain", ("domain", "guest")), ("host", ("host", "hypervisor")))


def load_targets(config: pytest.Config) -> list[HostTarget]:
    """Read the run's targets, as its mode says: fio result directories, offline XML files, or each host's facts
    and domains."""
    run = run_config(config)
    globs = list(run.domains) or None
    if run.mode == "fio_results":  # offline perf: the files' directories are the targets
        return offline_hosts(str(run.fio_results), globs)
    if run.mode == "domain_xml":
        try:
            domains, unreadable = load_xml_files(list(run.domain_xml))
        except DomainXMLError as exc:
            raise pytest.UsageError(f"--domain-xml: {exc}") from None
        read = {d.source for d in domains}
        if unreadable and not read:
            shown = "\n  ".join(p.reason for p in unreadable[:10])
            more = f"\n  ... and {len(unreadable) - 10} more" if len(unreadable) > 10 else ""
            raise pytest.UsageError(f"--domain-xml: no file could be read:\n  {shown}{more}")
        hosts = offline_targets(run, domains, unreadable)
    else:
        # --domain picks the domains before their XML and images are read: a narrow glob pays for what it selects
        hosts = [load_host(spec, run.libvirt_uri, _progress(config), run.domains) for spec in host_specs(run)]
        for host in hosts:
            if host.error:
                _progress(config)(f"kvmio: {host.error}")
    names = sorted({d.name for h in hosts for d in h.domains})
    unmatched = filter_domains(hosts, globs)
    if unmatched:
        raise pytest.UsageError(
            f"--domain {', '.join(unmatched)}: matches no domain on "
            f"{', '.join(h.name for h in hosts if not h.error)}; check the name or drop the filter"
            + (f" (domains there: {', '.join(names)})" if names else "")
        )
    return hosts


def offline_targets(run: RunConfig, domains: list[Domain], unreadable: list[FileProblem]) -> list[HostTarget]:
    """Return the offline hosts that judge the --domain-xml files.

    One host, `offline`, judged on --assume or on the one --host-facts file: target ids are the offline ids
    (`offline/<file>:<domain>/<disk>`). With several --host-facts files, each file's host judges every file, as
    `offline@HOST` (`offline@hv01/<file>:<domain>/<disk>`), so each verdict says which host's facts judged it.
    --assume overrides the facts it names in every file. Unreadable files make their error items once.
    """
    saved = run.host_facts
    if len(saved) <= 1:
        name = OFFLINE_HOST
        facts = as_target(saved[0], name, run.assume) if saved else assumed_facts(name, run.assume)
        judged = [(name, facts, domains)]
    else:
        judged = []
        for index, file in enumerate(saved):
            name = f"{OFFLINE_HOST}@{file.host}"
            # Each host gets its own Domain objects: images, backends and machine types are the host's.
            copies = domains if index == 0 else load_xml_files(list(run.domain_xml))[0]
            for dom in copies:
                dom.host = name
            judged.append((name, as_target(file, name, run.assume), copies))
    hosts = []
    for index, (name, facts, host_domains) in enumerate(judged):
        if saved:
            apply_host_facts(facts, host_domains)
        host = HostTarget(name=name, spec=None, facts=facts, domains=host_domains,
                          unreadable=unreadable if index == 0 else [])
        host.leave_out_other_drivers()
        hosts.append(host)
    return hosts


def _progress(config: pytest.Config) -> Callable[[str], None]:
    def write(line: str) -> None:
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None and config.get_verbosity() >= 0:
            reporter.write_line(line)

    return write


def host_specs(run: RunConfig) -> list[HostSpec]:
    """Return the hosts to read: the hosts setting's (CLI > KVMIO_HOSTS > ini kvmio_hosts), else local or every host
    of pytest-testinfra's --ansible-inventory; `ansible://PATTERN` expanded from the inventory, deduplicated."""
    named = run.hosts or (parse_host_spec("ansible://all" if run.ansible_inventory else "local"),)
    specs = []
    seen = set()
    for named_spec in named:
        text = named_spec.raw.strip()
        try:
            if text.startswith("ansible://"):
                found = ansible_host_specs(text.removeprefix("ansible://").split("?")[0], run.ansible_inventory)
            else:
                found = [named_spec]
        except ValueError as exc:
            raise pytest.UsageError(f"{run.sources.get('hosts', 'default')}: {exc}") from None
        for spec in found:
            if spec.name not in seen:
                seen.add(spec.name)
                specs.append(spec)
    return specs


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    markers.register(config)
    _xml_arguments(config)
    config.stash[RUN_CONFIG] = RunConfig.from_pytest(config)  # the mode and every setting, resolved once
    state = KvmioState(config, loader=lambda: load_targets(config))
    config.stash[STATE] = state
    config.pluginmanager.register(state.collector, "kvmio-verdicts")
    # Registered now, after entry-point plugins, so kvmio's `host` wins over pytest-testinfra's.
    config.pluginmanager.register(fixtures, "kvmio-fixtures")
    config.pluginmanager.register(PerfPlugin(config), "kvmio-perf")
    historysuite.register(config)  # --kvmio-history: every measurement appended, perf-history judged
    config.pluginmanager.register(xdist_groups, "kvmio-xdist-groups")
    state.enrichers = reporting.register(config)  # waivers, the gate, the ticket line, fixes, Allure
    _one_line_per_failure(config)
    # testinfra logs every command it runs, `sshpass -p PASSWORD` included, into pytest's log capture.
    testinfra_log = logging.getLogger("testinfra")
    if not any(isinstance(f, RedactingFilter) for f in testinfra_log.filters):
        testinfra_log.addFilter(RedactingFilter())


def _xml_arguments(config: pytest.Config) -> None:
    """Take the *.xml files the shell expanded `--domain-xml templates/*.xml` into out of pytest's own arguments.

    The shell turns the glob into `--domain-xml templates/a.xml templates/b.xml ...`: the first file is the
    option's value, the others would be collected by pytest as test paths (and fail as such).
    """
    xml = config.getoption("kvmio_domain_xml", None)
    if not xml:
        return
    taken = [a for a in config.args if a.endswith(".xml") and (config.invocation_params.dir / a).is_file()]
    if not taken:
        return
    xml.extend(str(config.invocation_params.dir / a) if not Path(a).is_absolute() else a for a in taken)
    rest = [a for a in config.args if a not in taken]
    if not rest:  # pytest's own choice when no path is given: testpaths, else the invocation directory
        testpaths = [str(config.rootpath / p) for p in config.getini("testpaths")]
        rest = testpaths or [str(config.invocation_params.dir)]
    config.args[:] = rest


def _one_line_per_failure(config: pytest.Config) -> None:
    """Show each failure on one line (`--tb=line`) in runs that check kvmio targets, unless --tb was chosen.

    A rule's failure message already names the target, the values seen and the fix; the rule's source
    lines add nothing. And pytest prints tracebacks in time quadratic in the number of reports (for each
    failure it scans every report for teardown output: pytest-dev/pytest#13360), so 1,858 failures among
    83,000 reports took longer than the whole run. `--tb=auto` (or any --tb) brings tracebacks back.
    """
    if config.option.tbstyle != "auto" or not run_config(config).names_targets:
        return
    given = [*config.invocation_params.args, *shlex.split(os.environ.get("PYTEST_ADDOPTS", ""))]
    given += [str(a) for a in config.getini("addopts")]
    if not any(str(a).startswith("--tb") for a in given):
        config.option.tbstyle = "line"


def _level(fixturenames: list[str]) -> str | None:
    for level, names in LEVEL_FIXTURES:
        if any(n in fixturenames for n in names):
            return level
    return None


@pytest.hookimpl(trylast=True)  # after the suites' own hooks, which hand their cases over (parametrize_with_targets)
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize with (target, case) pairs, leaving out those the item's catalogue rule does not concern.

    Deciding here, before pytest makes the items, keeps a fleet cheap: offline, every guest and perf pair
    of every disk would otherwise become an item only to be dropped. Rules with their own `applies=`
    are decided on the items (pytest_collection_modifyitems), which see every parameter.
    """
    names, cases = metafunc.definition.stash.get(CASES, ([], [pytest.param()]))
    level = _level(metafunc.fixturenames)
    if level is None or "kvmio_target" not in metafunc.fixturenames:
        if names:
            metafunc.parametrize(names, cases)
        return
    state = metafunc.config.stash[STATE]
    targets = list(iter_targets(state.hosts(), level))
    function_rule = metafunc.definition.get_closest_marker("rule")
    prechecked = True
    argvalues = []
    for case in cases:  # cases outside, targets inside: the order pytest gives two parametrize calls
        values, marks, case_id = _case_parts(case, len(names))
        rule = next((m for m in marks if m.name == "rule"), function_rule)
        entry = catalogue.lookup(str(rule.args[0])) if rule is not None and rule.args else None
        if entry is None or "applies" in rule.kwargs:  # type: ignore[union-attr]
            prechecked = False
        params = dict(zip(names, values))
        for target in targets:
            if entry is not None and prechecked and entry.not_applicable(catalogue.Scope(target, params, metafunc.config)):
                state.collector.not_applicable[str(rule.args[0])] += 1  # type: ignore[union-attr]
                continue
            tid = _target_id(target)
            argvalues.append(pytest.param(target, *values, marks=marks, id=f"{case_id}-{tid}" if case_id else tid))
    if prechecked:
        state.prechecked.add(metafunc.definition.nodeid)
    if not argvalues:  # no target at all (a domain without disks), or none the rule concerns
        state.emptied.add(metafunc.definition.nodeid)  # pytest still makes one placeholder item: drop it
    metafunc.parametrize(["kvmio_target", *names], argvalues, indirect=["kvmio_target"])


def _case_parts(case: Any, count: int) -> tuple[tuple[Any, ...], list[Any], str | None]:
    """Return (values, marks, id) of a suite's case: a pytest.param(...) or plain value(s)."""
    if hasattr(case, "values") and hasattr(case, "marks"):
        return tuple(case.values), list(case.marks), case.id
    values = tuple(case) if count > 1 else (case,)
    return values, [], "-".join(str(v) for v in values)


def _target_id(target: Target) -> str:
    if target.host.error is not None and target.level == "host":
        return target.host.name
    return target.id if target.host.error is None else f"{target.host.name}/unreachable"


@pytest.hookimpl(tryfirst=True)  # before -k and -m deselect: rule ids are keywords of the items
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Drop the items of rules that do not concern their target; count them per rule as not applicable.

    Also: each kept item answers to its rule id in `-k`, `--kvmio-rule` keeps only the rules named, and
    each domain XML file that could not be read becomes an error item.
    """
    state = config.stash.get(STATE, None)
    if state is None:
        return
    kept = []
    validated: set[str] = set()
    for item in items:
        function = _function_nodeid(item)
        if function in state.emptied:
            continue
        if function in state.prechecked:  # judged per (target, case) when parametrized
            if function not in validated:
                validated.add(function)
                catalogue.rule_of(item)  # a malformed marker is still a usage error
            kept.append(item)
            continue
        target = item_target(item)
        rule = catalogue.rule_of(item) if target is not None else None
        if rule is not None and target is not None:
            applies = catalogue.applies_of(item)
            scope = catalogue.Scope(target, _case_params(item), config)
            why = None if target.host.error is not None else applies(scope) if applies is not None else None
            if why:
                state.collector.not_applicable[rule[0]] += 1
                continue
        kept.append(item)
    if state.loaded_hosts:
        kept += xmlproblems.items_for(session, [p for h in state.loaded_hosts for p in h.unreadable])
    for item in kept:
        marker = item.get_closest_marker("rule")
        if marker is not None and marker.args:
            item.extra_keyword_matches.add(str(marker.args[0]))
    items[:] = _only_rules_asked_for(config, kept)


def _only_rules_asked_for(config: pytest.Config, items: list[pytest.Item]) -> list[pytest.Item]:
    """Keep the items of the rules `--kvmio-rule` names (ids or globs); report the others as deselected."""
    wanted = run_config(config).rules
    if not wanted:
        return items
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    seen: set[str] = set()
    for item in items:
        marker = item.get_closest_marker("rule")
        rule = str(marker.args[0]) if marker is not None and marker.args else None
        hits = [w for w in wanted if rule is not None and fnmatch.fnmatchcase(rule, w)]
        seen.update(hits)
        (kept if hits else dropped).append(item)
    known = {r.id for r in catalogue.RULES} | {xmlproblems.RULE_ID}
    unknown = [w for w in wanted if w not in seen and not any(fnmatch.fnmatchcase(r, w) for r in known)]
    if unknown:
        raise pytest.UsageError(
            f"--kvmio-rule {', '.join(unknown)}: no rule has that id; `kvmio rules` lists them"
        )
    if dropped:
        config.hook.pytest_deselected(items=dropped)
    return kept


def _function_nodeid(item: pytest.Item) -> str:
    """Return the node id of the test function an item was made from (its parametrization's definition)."""
    name = getattr(item, "originalname", item.name)
    return f"{item.parent.nodeid}::{name}" if item.parent is not None else item.nodeid


#: Key of the not-applicable counts pytest-xdist workers hand to the controller (which collects nothing itself).
XDIST_NOT_APPLICABLE = "kvmio_not_applicable"
#: Key of the host summaries (facts, error) workers hand to the controller for the ticket line and JSON.
XDIST_HOSTS = "kvmio_hosts"
#: Key of the domains left out (another driver runs them) that workers hand to the controller.
XDIST_LEFT_OUT = "kvmio_left_out"


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    workeroutput = getattr(session.config, "workeroutput", None)
    state = session.config.stash.get(STATE, None)
    if workeroutput is not None and state is not None:
        workeroutput[XDIST_NOT_APPLICABLE] = dict(state.collector.not_applicable)
        workeroutput[XDIST_HOSTS] = state.host_summaries()
        workeroutput[XDIST_LEFT_OUT] = state.left_out()


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """Take the not-applicable counts and host summaries from a worker (every worker collects the same items)."""
    output = getattr(node, "workeroutput", {})
    counts, hosts = output.get(XDIST_NOT_APPLICABLE), output.get(XDIST_HOSTS)
    state = node.config.stash.get(STATE, None)
    if state is None:
        return
    if counts and not state.collector.not_applicable:
        state.collector.not_applicable.update(counts)
    if hosts and not state.worker_hosts:
        state.worker_hosts = list(hosts)
    left_out = output.get(XDIST_LEFT_OUT)
    if left_out and not state.worker_left_out:
        state.worker_left_out = list(left_out)


def pytest_runtest_setup(item: pytest.Item) -> None:
    target = item_target(item)
    if target is not None and target.host.error is not None:
        return  # the fixture reports the unreachable host as an error
    reason = markers.unmet_requirement(item, target.host.facts if target else None)
    if reason:
        pytest.skip(reason)
    if item.get_closest_marker("requires_guest_agent") is not None:
        if target is None or target.domain is None:
            pytest.skip("requires a guest agent: this test has no domain (request `domain`, `disk` or `guest`)")
        found = guest_or_reason(item.config, target)
        if isinstance(found, str):
            pytest.skip(f"requires a guest agent: {found}")
        if isinstance(found, Exception):
            raise found


def _target_facts(target: Target | None) -> dict[str, Any]:
    if target is None or target.host.error is not None:
        return {}
    if target.disk is not None:
        return target.disk.facts()
    if target.domain is not None:
        return target.domain.facts()
    return target.host.facts.as_dict()


def _verdict_facts(item: pytest.Item, target: Target | None) -> dict[str, Any]:
    """Return the facts of an item's verdict record, JSON-able: its target's, narrowed by the marker, plus the rule's own."""
    marker = item.get_closest_marker("rule")
    wanted = marker.kwargs.get("facts") if marker else None
    extra = item.stash.get(EXTRA_FACTS, None)
    state = item.config.stash.get(STATE, None)
    if not wanted and not extra and target is not None and state is not None:
        # A target's own facts are the same in each of its items' reports: built once, shared (read-only).
        # keyed by what the target is (each test function has Target objects of its own for the same disk)
        key = (id(target.host), id(target.domain), id(target.disk))
        found = state.target_facts.get(key)
        if found is None:
            found = state.target_facts[key] = _jsonable(_target_facts(target))
        return found  # type: ignore[no-any-return]
    facts = _target_facts(target)
    if wanted:
        facts = {k: facts.get(k) for k in wanted}
    if extra:
        facts = {**facts, **extra}
    return _jsonable(facts)  # type: ignore[no-any-return]


# Innermost (trylast): every other makereport wrapper (allure-pytest's status) and every logreport consumer
# (terminal, JUnit, the verdicts) sees the finished report, a waived one included.
@pytest.hookimpl(wrapper=True, trylast=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    """Build the item's verdict record, the one place it is made: the enrichers adjust the report, the record is
    built, the enrichers add to it (in the order report.plugin.register declares), and the report carries it."""
    report = yield
    target = item_target(item)
    state = item.config.stash.get(STATE, None)
    enrichers = state.enrichers if state is not None else []
    for enricher in enrichers:
        enricher.adjust(item, call, report, target)
    record = _record(item, call, report, target)
    if record is not None:
        for enricher in enrichers:
            enricher.enrich(item, report, record, target)
        setattr(report, REPORT_ATTR, record)
    return report


def _record(item: pytest.Item, call: pytest.CallInfo[None], report: pytest.TestReport,
            target: Target | None) -> VerdictRecord | None:
    """Return the verdict record of one phase's report (None for items that are no kvmio rule)."""
    base = item.stash.get(RECORD_BASE, None)
    if base is None:  # what every phase's record says alike: built at the first report of the item
        rule = catalogue.rule_of(item)
        if rule is None:
            base = item.stash[RECORD_BASE] = {}
        elif isinstance(item, xmlproblems.UnreadableXmlItem):
            base = item.stash[RECORD_BASE] = {"rule": rule[0], "severity": rule[1], "target": item.target,
                                              "source": item.problem.path, "params": {}}
        else:
            base = item.stash[RECORD_BASE] = _jsonable({
                "rule": rule[0],
                "severity": rule[1],
                "target": (_target_id(target) if target else item.name).removesuffix("/unreachable"),
                "source": _source_file(item.config, target),
                "params": _case_params(item),
            })
    if not base:
        return None
    record = cast(VerdictRecord, dict(base))
    record["facts"] = _verdict_facts(item, target)  # JSON-able; shared by the reports of a target
    marks = item_record(item)
    if report.when == "call":  # what the rule, the waivers or the perf glue set while the item ran
        for key in (REC_OUTCOME, REC_NOTE, REC_WAIVER):
            if marks.get(key) is not None:
                record[key] = _jsonable(marks[key])  # type: ignore[literal-required]
        _add_domain_note(record, target)
    if not report.passed:
        message = message_of(report)
        if report.when == "call" and report.failed and not hasattr(report, "wasxfail") and not is_rule_failure(call):
            record[REC_OUTCOME] = "error"
            message = f"kvmio could not judge {record['rule']} on {record['target']}: {message}"
        if record["source"] and record["source"] not in message:
            message += f" [{record['source']}]"
        record["message"] = message
        _name_rule_in_longrepr(report, record["rule"], message)
    return record


def _add_domain_note(record: VerdictRecord, target: Target | None) -> None:
    """Add what is true of the whole domain (a name taken from the file) to a verdict's note, and name its file."""
    domain_note = target.domain.note if target is not None and target.domain is not None else None
    if domain_note:
        record[REC_NOTE] = f"{record[REC_NOTE]}; {domain_note}" if record.get(REC_NOTE) else domain_note
    source = record.get("source")
    if record.get(REC_NOTE) and source and source not in record[REC_NOTE]:
        record[REC_NOTE] = f"{record[REC_NOTE]} [{source}]"


#: Per item: the part of its verdict record that is the same in every phase's report.
RECORD_BASE = pytest.StashKey[dict[str, Any]]()


def _case_params(item: pytest.Item) -> dict[str, Any]:
    """Return the item's parameters other than its target (a perf rule's profile and metric)."""
    callspec = getattr(item, "callspec", None)
    params = callspec.params if callspec is not None else {}
    return {k: v for k, v in params.items() if k != "kvmio_target"}


def _source_file(config: pytest.Config, target: Target | None) -> str | None:
    """Return the domain XML file an offline verdict was judged from (--domain-xml), else None."""
    if target is None or target.domain is None or run_config(config).mode != "domain_xml":
        return None
    return target.domain.source


def _name_rule_in_longrepr(report: pytest.TestReport, rule: str, message: str) -> None:
    """Start the report's one-line message with the rule id (terminal summary, JUnit message attribute)."""
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:  # a skip: (path, lineno, "Skipped: reason")
        report.longrepr = (longrepr[0], longrepr[1], f"Skipped: {rule}: {message}")
        return
    crash = getattr(longrepr, "reprcrash", None)
    if crash is not None and not crash.message.startswith(rule):
        crash.message = f"{rule}: {message}"


def _jsonable(value: Any) -> Any:
    """Return value with every leaf JSON-encodable (reports travel from xdist workers as JSON)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def pytest_collection(session: pytest.Session) -> None:
    """Read explicitly named targets before collecting, so bad input is a usage error (exit 4)."""
    config = session.config
    if run_config(config).reads_targets_early:
        config.stash[STATE].hosts()


def pytest_report_header(config: pytest.Config) -> list[str]:
    run = run_config(config)
    if run.mode == "domain_xml":
        return [f"kvmio: offline lint of {', '.join(run.domain_xml)}"]
    return []


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    state = config.stash.get(STATE, None)
    if state is None:
        return
    verdicts = state.collector.sorted()
    lines = format_table(verdicts, state.collector.not_applicable)
    left_out = state.left_out()
    if left_out:
        lines.append(f"left out: {describe_left_out(left_out)}")
    notes = [d.note for h in state.loaded_hosts for d in h.domains if d.note]
    lines += [f"note: {n}" for n in notes[:20]] + ([f"note: ... and {len(notes) - 20} more"] if len(notes) > 20 else [])
    if not lines:
        return
    terminalreporter.section("kvmio verdicts")
    for line in lines:
        terminalreporter.write_line(line)
    costs = cpucost.format_table(cpucost.cpu_costs(verdicts))
    if costs:
        terminalreporter.section("kvmio host CPU per I/O")
        for line in costs:
            terminalreporter.write_line(line)
