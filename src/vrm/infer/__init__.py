"""Inference: batched generation (generate.py), search strategies (search.py) and their scorers (scorers.py) over a shared-prefix KV cache (decode.py)."""
