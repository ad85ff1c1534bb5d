"""Evaluation: runs, metrics and reports."""
