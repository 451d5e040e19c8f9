"""tunesmith.engine."""
