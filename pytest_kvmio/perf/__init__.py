"""Performance: the fio reader and runner, thresholds and baselines, the noise-aware decisions, the suite's fio glue."""
