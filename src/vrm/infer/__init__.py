"""Inference: generation backends and (in later issues) search over reasoning."""
