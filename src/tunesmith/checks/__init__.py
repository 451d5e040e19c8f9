"""tunesmith.checks."""
