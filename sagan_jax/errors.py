"""Errors a user can cause. `main` prints their message as one line and exits non-zero."""


class UserError(Exception):
  """Bad config, missing data or an unusable workdir: the message says what to do."""
