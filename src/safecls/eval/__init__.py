"""Evaluation: benchmarks, judges, metrics, probing, reports."""
