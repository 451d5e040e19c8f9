"""tunesmith.audio."""
