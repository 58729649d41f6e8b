"""A/B experiments as a gate: `--kvmio-ab=a=ARM,b=ARM,profile=P` with `--kvmio-ab-expect=better|not-worse`.

One item per experiment and host (rule `ab-expect`); without --kvmio-ab the rule concerns nothing and makes no
item. The experiment is `kvmio ab`'s: rounds in a balanced order, B/A with a 95 % interval (see README, "A/B
experiments").
"""

from __future__ import annotations

import pytest

from pytest_kvmio.plugin import absuite as ab
from pytest_kvmio.runconfig import run_config

pytestmark = pytest.mark.perf


def pytest_generate_tests(metafunc):
    if "ab_spec" in metafunc.fixturenames:
        specs = ab.specs(metafunc.config)
        metafunc.parametrize("ab_spec", specs, ids=[s.id for s in specs])


@pytest.mark.rule("ab-expect")
def test_the_change_is_as_good_as_expected(hypervisor, kvmio_target, ab_spec, request, kvmio_facts, kvmio_record):
    """A storage change ships on evidence: B must beat A, or not be worse than A beyond the margin, with 95% confidence."""
    result = ab.run(request.config, kvmio_target.host, ab_spec)
    kvmio_facts["ab"] = ab.facts(result)
    ab.attach(request.config, result)
    ab.judge(result, ab_spec, run_config(request.config).ab_expect, kvmio_record)
