"""Evaluation: metrics, labelled evaluation, the benchmark harness, results, statistics, reports."""
