"""Plain helpers shared by the tests (data and tiny models they build); pytest fixtures live in conftest.py."""
