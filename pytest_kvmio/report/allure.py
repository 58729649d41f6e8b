"""Allure integration: labels that group by host → domain → rule, attachments, result-directory files.

Imported only when allure-pytest is loaded and enabled (--alluredir). Grouping:
- Behaviors: epic = host, feature = domain (host-level rules: "host"), story = rule id. A change board
  drills from a hypervisor to a VM and sees each rule once, with one test per disk under it.
- Suites: parentSuite = the rule's level (host/domain/disk rules), suite = rule id, subSuite = host, so
  the same rule across the whole fleet sits together.
- Title `rule on target`; severity from the rule marker; tags: rule id and a kvmio outcome that Allure
  has no status for (waived → skipped + tag "waived"; inconclusive → tag "inconclusive").
Allure 2 reads categories.json from the results dir and shows Suites/Behaviors from these labels. Allure 3
ignores categories.json and groups its tree by file by default; ci/allurerc.yaml (passed by
ci/kvmio-gate.sh) sets the same categories, the report name and a tree grouped by parentSuite → suite →
subSuite. Keep the two in step (tests/test_allure.py checks it).
"""

from __future__ import annotations

import html
import inspect
import json
import os
import platform
from pathlib import Path
from typing import Any

import allure
import pytest

from pytest_kvmio import __version__
from pytest_kvmio.model.redact import redact_uri
from pytest_kvmio.perf.decide import format_value
from pytest_kvmio.runconfig import run_config
from pytest_kvmio.state import STATE
from pytest_kvmio.verdict.record import REC_OUTCOME, REC_WAIVER, Enricher, VerdictRecord

#: Allure categories; first match wins. Regexes match the whole message (Allure 2 uses Java
#: `matches`), so they are wrapped in [\s\S]* rather than using (?s). Allure 3 takes its categories from
#: ci/allurerc.yaml, where the same regexes are anchored (^(?:...)$) because JS RegExp.test searches.
CATEGORIES = [
    {
        "name": "Unreachable host / infrastructure",
        "matchedStatuses": ["failed", "broken"],
        "messageRegex": r"[\s\S]*(unreachable via|cannot run commands via|cannot connect to libvirt|"
                        r"timed out|Connection refused|No route to host)[\s\S]*",
    },
    {
        "name": "Inconclusive measurement",
        "matchedStatuses": ["skipped", "failed", "broken", "unknown"],
        "messageRegex": r"[\s\S]*(inconclusive|straddle|cannot judge against)[\s\S]*",
    },
    {
        "name": "Performance regression",
        "matchedStatuses": ["failed"],
        "messageRegex": r"[\s\S]*median [\s\S]*(below|above) (baseline|floor|ceiling)[\s\S]*",
    },
    {
        "name": "Configuration violation",
        "matchedStatuses": ["failed"],
        "messageRegex": r"(AssertionError|Failed)[\s\S]*",
    },
    {"name": "Broken rule or plugin (not a verdict)", "matchedStatuses": ["broken"]},
]
LEVEL_SUITE = {"host": "host rules", "domain": "domain rules", "disk": "disk rules"}
#: Report name: Allure 2 takes it from executor.json, Allure 3 from ci/allurerc.yaml.
REPORT_NAME = "kvmio storage acceptance"


def _properties_line(key: str, value: object) -> str:
    text = str(value).replace("\\", "\\\\").replace("\n", " ")
    return f"{key.replace(' ', '_').replace('=', '_').replace(':', '_')}={text}"


def executor_from_env(env: dict[str, str] | os._Environ[str] = os.environ) -> dict[str, Any] | None:
    """Describe the CI job that ran the suites (GitLab, GitHub Actions, Jenkins), or None outside CI."""
    if env.get("GITLAB_CI"):
        return {
            "name": "GitLab CI", "type": "gitlab", "url": env.get("CI_SERVER_URL", ""),
            "buildOrder": env.get("CI_PIPELINE_IID") or env.get("CI_PIPELINE_ID"),
            "buildName": f"{env.get('CI_PROJECT_PATH', '')} pipeline #{env.get('CI_PIPELINE_IID', '')} "
                         f"job {env.get('CI_JOB_NAME', '')}".strip(),
            "buildUrl": env.get("CI_JOB_URL") or env.get("CI_PIPELINE_URL", ""),
            "reportName": REPORT_NAME,
        }
    if env.get("GITHUB_ACTIONS"):
        server, repo, run = env.get("GITHUB_SERVER_URL", "https://github.com"), env.get("GITHUB_REPOSITORY", ""), env.get("GITHUB_RUN_ID", "")
        return {
            "name": "GitHub Actions", "type": "github", "url": server,
            "buildOrder": env.get("GITHUB_RUN_NUMBER"),
            "buildName": f"{env.get('GITHUB_WORKFLOW', '')} #{env.get('GITHUB_RUN_NUMBER', '')}",
            "buildUrl": f"{server}/{repo}/actions/runs/{run}" if repo and run else server,
            "reportName": REPORT_NAME,
        }
    if env.get("JENKINS_URL"):
        return {
            "name": "Jenkins", "type": "jenkins", "url": env.get("JENKINS_URL", ""),
            "buildOrder": env.get("BUILD_NUMBER"),
            "buildName": env.get("BUILD_TAG") or f"{env.get('JOB_NAME', '')} #{env.get('BUILD_NUMBER', '')}",
            "buildUrl": env.get("BUILD_URL", ""),
            "reportUrl": (env.get("BUILD_URL", "") + "allure/") if env.get("BUILD_URL") else None,
            "reportName": REPORT_NAME,
        }
    return None


def perf_entries(facts: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the perf facts of a verdict as a list ({metric, median, samples, limit, baseline, tolerance})."""
    perf = facts.get("perf")
    if isinstance(perf, dict):
        return [perf]
    if isinstance(perf, list):
        return [p for p in perf if isinstance(p, dict)]
    return []


def limit_edges(limit: Any) -> list[tuple[str, float]]:
    """Return (label, value) of a limit given as a number or as {floor, ceiling, class}."""
    if isinstance(limit, (int, float)):
        return [("threshold", float(limit))]
    if isinstance(limit, dict):
        return [(k, float(limit[k])) for k in ("floor", "ceiling") if isinstance(limit.get(k), (int, float))]
    return []


def comparison_html(entries: list[dict[str, Any]]) -> str:
    """Return an HTML table: measured median and samples vs limit vs baseline (± tolerance)."""

    def fmt(value: Any, metric: str) -> str:
        return format_value(float(value), metric) if isinstance(value, (int, float)) else "—"

    rows = []
    for e in entries:
        metric = str(e.get("metric", "?"))
        tol = e.get("tolerance")
        base = fmt(e.get("baseline"), metric) + (f" ± {float(tol):.0%}" if isinstance(tol, (int, float)) else "")
        samples = ", ".join(fmt(s, metric) for s in e.get("samples") or [])
        limit = e.get("limit")
        edges = limit_edges(limit)
        threshold = " / ".join(
            (fmt(v, metric) if label == "threshold" else f"{label} {fmt(v, metric)}") for label, v in edges
        ) or "—"
        if edges and isinstance(limit, dict) and limit.get("class"):
            threshold += f" ({limit['class']})"
        cells = [metric, fmt(e.get("median"), metric), samples, threshold, base, str(e.get("outcome", ""))]
        rows.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    head = "".join(f"<th>{h}</th>" for h in ("metric", "measured (median)", "samples", "threshold", "baseline", "outcome"))
    return (
        "<html><head><meta charset='utf-8'></head><body>"
        "<table border='1' cellpadding='4' style='border-collapse:collapse'>"
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></body></html>"
    )


def perf_chart(entries: list[dict[str, Any]], title: str) -> bytes | None:
    """Return a PNG: samples and median per metric against limit and baseline band; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    import io

    fig, axes = plt.subplots(1, len(entries), figsize=(4.5 * len(entries), 3.6), squeeze=False)
    for ax, e in zip(axes[0], entries):
        samples = [float(s) for s in e.get("samples") or [] if isinstance(s, (int, float))]
        ax.bar([f"run {i + 1}" for i in range(len(samples))], samples, color="#4c78a8", label="runs")
        if isinstance(e.get("median"), (int, float)):
            ax.axhline(float(e["median"]), color="#1f1f1f", linestyle="-", label="median")
        for label, value in limit_edges(e.get("limit")):
            ax.axhline(value, color="#d62728", linestyle="--", label=label)
        if isinstance(e.get("baseline"), (int, float)):
            base = float(e["baseline"])
            ax.axhline(base, color="#2ca02c", linestyle=":", label="baseline")
            tol = e.get("tolerance")
            if isinstance(tol, (int, float)):
                ax.axhspan(base * (1 - tol), base * (1 + tol), color="#2ca02c", alpha=0.12, label="tolerance")
        ax.set_title(str(e.get("metric", "")), fontsize=10)
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=90)
    plt.close(fig)
    return out.getvalue()


class AllureKvmio(Enricher):
    """Decorate each rule's Allure result and write environment/executor/categories files at the end."""

    def __init__(self, config: pytest.Config, results_dir: str) -> None:
        self.config = config
        self.results_dir = Path(results_dir)
        self.no_charts: str | None = None
        self._attached: set[str] = set()  # domain ids and hosts whose XML / facts a result already carries
        self.problems: list[str] = []

    # The record's last enricher: allure-pytest holds the item's test result open until pytest_runtest_logfinish.
    def enrich(self, item: pytest.Item, report: pytest.TestReport, record: VerdictRecord, target: Any) -> None:
        if report.when == "call" or (report.when == "setup" and not report.passed):
            self._decorate(item, record, target, needs_context=not report.passed)

    def _decorate(self, item: pytest.Item, record: VerdictRecord, target: Any, *, needs_context: bool) -> None:
        rule, target_id = str(record["rule"]), str(record.get("target", ""))
        host = target.host.name if target else target_id.split("/")[0]
        domain = target.domain.name if target and target.domain else None
        level = target.level if target else "host"
        allure.dynamic.title(f"{rule} on {target_id}")
        allure.dynamic.epic(host)
        allure.dynamic.feature(domain or "host")
        allure.dynamic.story(rule)
        allure.dynamic.parent_suite(LEVEL_SUITE.get(level, "rules"))
        allure.dynamic.suite(rule)
        allure.dynamic.sub_suite(host)
        allure.dynamic.severity(allure.severity_level(str(record.get("severity", "normal"))))
        allure.dynamic.tag(rule)
        allure.dynamic.label("kvmio_rule", rule)
        allure.dynamic.label("kvmio_target", target_id)
        allure.dynamic.parameter("kvmio_target", target_id)  # not the Target repr
        doc = inspect.getdoc(getattr(item, "obj", None))
        outcome = record.get(REC_OUTCOME)
        description = doc or ""
        if record.get("source"):
            allure.dynamic.label("kvmio_source", str(record["source"]))
            description += f"\n\nSource: `{record['source']}`"
        if outcome:
            allure.dynamic.tag(str(outcome))
            allure.dynamic.label("kvmio_outcome", str(outcome))
        waiver = record.get(REC_WAIVER)
        if waiver:
            description += (
                f"\n\n**Waived** until {waiver['expires']} ({waiver.get('ticket', 'no ticket')}, {waiver['where']}): "
                f"{waiver['justification']}\n\nFailure: {waiver.get('failure', '')}"
            )
            allure.attach(json.dumps(waiver, indent=2), "waiver", allure.attachment_type.JSON)
        if description:
            allure.dynamic.description(description)
        # The domain XML (secrets masked at parse time) and the host facts go where a person needs them: on every
        # item that did not pass, and once per domain / host otherwise, so 1,000 domains don't mean 100,000 copies.
        if target is not None and target.domain is not None and (needs_context or target.domain.id not in self._attached):
            self._attached.add(target.domain.id)
            allure.attach(target.domain.xml, "kvmio_target.domain.xml", allure.attachment_type.XML)
        if target is not None and (needs_context or f"host:{target.host.name}" not in self._attached):
            self._attached.add(f"host:{target.host.name}")
            facts = target.host.facts.as_dict() | ({"error": target.host.error} if target.host.error else {})
            allure.attach(json.dumps(facts, indent=2, default=str), "host facts", allure.attachment_type.JSON)
        verdict_facts = dict(record.get("facts") or {})
        allure.attach(json.dumps(verdict_facts, indent=2, default=str, sort_keys=True), "verdict facts",
                      allure.attachment_type.JSON)
        entries = perf_entries(verdict_facts)
        if entries:
            allure.attach(comparison_html(entries), "perf: measured vs threshold vs baseline", allure.attachment_type.HTML)
            png = perf_chart(entries, f"{rule} on {target_id}")
            if png is None:
                self.no_charts = "matplotlib is not installed; perf charts were left out (pip install 'pytest-kvmio[charts]')"
            else:
                allure.attach(png, "perf chart", allure.attachment_type.PNG)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        try:
            self.write_results_files()
        except OSError as exc:  # a report problem must not turn into a traceback at the end of the run
            self.problems.append(f"could not write Allure environment files to {self.results_dir}: {exc}")

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        for line in ([self.no_charts] if self.no_charts else []) + self.problems:
            terminalreporter.write_line(f"kvmio: {line}")

    def write_results_files(self) -> None:
        """Write environment.properties, executor.json (in CI) and categories.json into the results dir."""
        from importlib.metadata import version


        self.results_dir.mkdir(parents=True, exist_ok=True)
        env = {
            "kvmio.version": __version__,
            "pytest.version": pytest.__version__,
            "allure-pytest.version": version("allure-pytest"),
            "python.version": platform.python_version(),
        }
        state = self.config.stash.get(STATE, None)
        for host in state.loaded_hosts if state is not None else []:
            facts = host.facts
            prefix = f"host.{host.name}"
            if host.error:
                env[f"{prefix}.error"] = host.error
                continue
            for key in ("kernel", "qemu", "libvirt"):
                value = getattr(facts, key)
                if value is not None:
                    env[f"{prefix}.{key}"] = str(value) + (" (assumed)" if key in facts.assumed else "")
            if facts.libvirt_uri:
                env[f"{prefix}.libvirt_uri"] = redact_uri(facts.libvirt_uri)
            if facts.offline:
                env[f"{prefix}.mode"] = "offline lint of " + ", ".join(run_config(self.config).domain_xml)
        (self.results_dir / "environment.properties").write_text(
            "".join(_properties_line(k, v) + "\n" for k, v in env.items()), encoding="utf-8"
        )
        executor = executor_from_env()
        if executor is not None:
            (self.results_dir / "executor.json").write_text(json.dumps(executor, indent=2) + "\n")
        (self.results_dir / "categories.json").write_text(json.dumps(CATEGORIES, indent=2) + "\n")
