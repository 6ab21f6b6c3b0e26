"""Errors a user can cause, and the clean stop on preemption. Every tool prints their
message as one line and exits non-zero (sagan_jax.cli.run)."""

import errno
import os

DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


class UserError(Exception):
  """Bad config, missing data or an unusable workdir: the message says what to do."""


class TrainingDiverged(UserError):
  """Non-finite losses or gradients persisted for max_nonfinite_steps steps (none was applied)."""


class DiskFull(UserError):
  """A write failed for lack of space (or quota); what was saved before stays."""


class Preempted(Exception):
  """SIGTERM/SIGINT or a preemption notice: the step finished and a checkpoint was written."""

  def __init__(self, message: str, exit_code: int):
    super().__init__(message)
    self.exit_code = exit_code


def disk_full(e: BaseException | None) -> BaseException | None:
  """The exception in e's chain that says a disk (or a quota) is full, if any: orbax and
  TensorStore wrap the OSError, or keep only its text."""
  seen = set()
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    if isinstance(e, OSError) and e.errno in DISK_FULL_ERRNOS:
      return e
    if any(os.strerror(code) in str(e) for code in DISK_FULL_ERRNOS):
      return e
    e = e.__cause__ or e.__context__
  return None
