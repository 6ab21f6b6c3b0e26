"""Errors a user can cause, and the clean stop on preemption. `main` prints their
message as one line and exits non-zero."""


class UserError(Exception):
  """Bad config, missing data or an unusable workdir: the message says what to do."""


class TrainingDiverged(UserError):
  """Non-finite losses or gradients persisted after restoring the last good checkpoint."""


class Preempted(Exception):
  """SIGTERM/SIGINT or a preemption notice: the step finished and a checkpoint was written."""

  def __init__(self, message: str, exit_code: int):
    super().__init__(message)
    self.exit_code = exit_code
