"""kvmio's rule suites: one plain pytest test per rule. Installed as `pytest_kvmio.suites`; `kvmio lint` runs them."""
