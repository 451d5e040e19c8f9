"""tunesmith: train music and audio generation models, from raw files to a served model."""

__version__ = "0.1.0"
