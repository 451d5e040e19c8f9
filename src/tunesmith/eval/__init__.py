"""Metrics on what the models make (codec reconstructions, generated audio)."""
