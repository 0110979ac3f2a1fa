"""Compression pipeline: palette tokens, model probabilities, frequency tables, range coder."""
