"""The results history: every perf measurement kept, per series, with its environment; change points and the gate."""
