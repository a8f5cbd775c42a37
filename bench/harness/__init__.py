"""The harness: suites, typed cells, execution, executors, references, timing, metrics and the
results store."""
