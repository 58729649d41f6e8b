"""Fixes: for each failed rule, the change that makes it pass, computed from the domain model and applied to its XML."""
