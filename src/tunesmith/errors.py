"""Errors meant for users: the CLI prints them without a traceback and exits 2."""


class UserError(Exception):
    """Something the user can fix (bad path, bad file, bad argument); the message says how."""
