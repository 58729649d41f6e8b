"""`python -m pytest_kvmio.cli`: the `kvmio` command."""

import sys

from pytest_kvmio.cli import main

sys.exit(main())
