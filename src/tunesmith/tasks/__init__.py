"""tunesmith.tasks."""
