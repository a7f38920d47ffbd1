"""Evaluation: the runner, judges (and their training), rates with corrected ASR, probing, reports."""
