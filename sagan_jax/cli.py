"""A user's mistake as one line: every command-line tool of the package parses its flags with
``parse_flags`` and runs its work inside ``run``.

- ``parse_flags``: a bad flag, an unknown config field, a config file that does not load or
  a config variant that does not exist end in one ``error:`` line and exit code 2 (absl and
  ml_collections would print a traceback or a usage page, exit code 1). It also makes a
  second stop signal end the process at once, whatever it is doing (sagan_jax.signals).
- ``run``: a UserError, a full disk and an interrupted start-up end in one line.

Process start-up (devices, caches, logging) is sagan_jax.runtime's; signals sagan_jax.signals'.
"""

import os
import re
import signal
import sys

from sagan_jax import signals
from sagan_jax.config import RENAMED_FIELDS

USAGE_EXIT = 2  # a user's mistake


def _fail(message: str, code: int = USAGE_EXIT):
  print(f"error: {message}", file=sys.stderr)
  sys.exit(code)


def _tool_name() -> str:
  main = sys.modules.get("__main__")
  spec = getattr(main, "__spec__", None)
  if spec is None:
    return os.path.basename(sys.argv[0] or "python")
  return spec.name.removesuffix(".__main__")  # a package's tool: python -m sagan_jax.report


# Flags


def _last_line(text: str) -> str:
  """The exception line of a traceback folded into a message, without its type."""
  lines = [line.strip() for line in str(text).splitlines() if line.strip()]
  last = lines[-1] if lines else ""
  return re.sub(r"^[A-Za-z_.]*(Error|Exception|Exit)\w*: ", "", last)


def _unknown_field(e: BaseException, argv) -> str | None:
  """ml_collections' KeyError/AttributeError for --config.a.b=… naming no field of the config."""
  text = str(e).replace("\\n", "\n").replace("\\'", "'")
  key = re.search(r"'(\w+)'", text)
  if not key:
    return None
  suggestion = re.search(r'Did you mean "(\w+)"', text)
  for arg in argv:
    override = re.match(r"^--?(?:no)?(\w+)\.([\w.]+)", arg)
    parts = override.group(2).split(".") if override else []
    if key.group(1) in parts:
      flag, at = override.group(1), parts.index(key.group(1))
      unknown = ".".join(parts[: at + 1])
      hint = ""
      if suggestion:
        hint = f" (did you mean --{flag}.{'.'.join(parts[:at] + [suggestion.group(1)] + parts[at + 1 :])}?)"
      return (
        f"--{flag}.{override.group(2)}: the config has no field {unknown!r}{hint}; the "
        f"config file lists every field with a comment"
      )
  return None


def flag_error(e: BaseException, argv) -> str:
  """One line for an exception raised while parsing the command line (all of it user input:
  flags, the config file they name, its variant, its overrides)."""
  from absl import flags

  text = str(e)
  if isinstance(e, (KeyError, AttributeError)) and (line := _unknown_field(e, argv)):
    return line
  required = re.match(r"flag --(\w+)=None: Flag --\w+ must have a value other than None", text)
  if required:
    return f"--{required.group(1)} is required (python -m {_tool_name()} --helpshort lists the flags)"
  if "Error whilst parsing config file" in text:  # config_flags folds in the file's traceback
    head = text.split(": Error whilst parsing config file")[0].strip()
    return f"{head}: {_last_line(text)}"
  config = next((a.split("=", 1)[1] for a in argv if re.match(r"^--?config=", a)), None)
  if config and config.split(":")[0].endswith(".json") and not isinstance(e, flags.Error):
    return (
      f"--config={config}: a config file is Python (configs/<name>.py), not a run's "
      f"config.json; evaluate reads the workdir's config.json itself (leave --config out); "
      f"to change fields give the .py config the run came from, with --config.X=… overrides"
    )
  if "Failed loading config file" in text or isinstance(e, (OSError, ImportError, SyntaxError)):
    where = f"--config={config}" if config else "--config"
    detail = _last_line(text).replace("[Errno 2] ", "")
    if isinstance(e, SyntaxError):
      detail = f"{e.msg} ({e.filename}, line {e.lineno})"
    return f"{where}: the config file does not load ({detail})"
  if config and not isinstance(e, flags.Error):
    return f"--config={config}: the config file does not load ({type(e).__name__}: {_last_line(text)})"
  return " ".join(text.split()) or type(e).__name__


def define_step_flag(help_text: str) -> None:
  """--step: a checkpoint's step, or 'best' (workdir/best/, config.best_metric's checkpoint)."""
  from absl import flags

  class StepParser(flags.ArgumentParser):
    def parse(self, argument):
      if argument is None or (isinstance(argument, int) and not isinstance(argument, bool)):
        return argument
      text = str(argument).strip()
      if text == "best":
        return text
      try:
        return int(text)
      except ValueError:
        raise ValueError(f"a checkpoint's step (a whole number) or 'best', got {text!r}") from None

    def flag_type(self):
      return "step"

  flags.DEFINE(StepParser(), "step", None, help_text + " 'best': the run's best checkpoint (workdir/best/).")


def with_renamed_fields(argv) -> list:
  """argv with --config.<old name>… of a field that moved (config.RENAMED_FIELDS) at its new
  place: command lines written before the move keep working."""
  out = []
  for arg in argv:
    match = re.match(r"^(--?\w+\.)(\w+)(=.*)?$", arg)
    if match and match.group(2) in RENAMED_FIELDS:
      arg = f"{match.group(1)}{RENAMED_FIELDS[match.group(2)]}{match.group(3) or ''}"
    out.append(arg)
  return out


def parse_flags(argv):
  """absl's flag parsing (``app.run(main, flags_parser=cli.parse_flags)``) with every mistake
  as one ``error:`` line, exit code 2; positional arguments are refused the same way; old
  spellings of moved config fields are read at their new places."""
  from absl import flags
  from ml_collections import ConfigDict
  from ml_collections.config_flags import config_flags

  signals.exit_on_second_signal()
  signals.handle_interrupts()
  flag_values = flags.FLAGS
  try:
    signals.stop_if_interrupted()  # one that arrived while the tool's modules loaded
    argv = with_renamed_fields(argv)
    rest = flag_values(argv)
    for name in list(flag_values):  # a config file that failed to load raises on first use
      flag = flag_values[name]
      if isinstance(flag.parser, config_flags.ConfigFileFlagParser) and flag.value is not None:
        getattr(flag.value, "get", None)
        if not isinstance(flag.value, ConfigDict):
          _fail(
            f"--{name}={flag.serialize().split('=', 1)[-1]}: get_config() returned "
            f"{str(flag.value)[:40]!r} ({type(flag.value).__name__}), not an ml_collections.ConfigDict; "
            f"return the config "
            f"(configs/default.py shows the form)"
          )
  except KeyboardInterrupt:
    signals.stopped_outside_the_loop(signal.SIGINT)
  except Exception as e:  # pylint: disable=broad-except  (only user input is parsed here)
    _fail(flag_error(e, argv))
  if len(rest) > 1:
    _fail(
      f"unexpected arguments: {' '.join(rest[1:])}; every option is a --flag "
      f"(python -m {_tool_name()} --helpshort lists them)"
    )
  return rest


def disk_full_message(e: BaseException) -> str:
  where = getattr(e, "filename", None)
  return (
    f"no space left on the device{f' writing {where}' if where else ''} "
    f"({' '.join(str(e).split())[:200]}); free space there (old runs, older checkpoints: "
    f"lower keep_checkpoints) and rerun the same command: what was saved before stays "
    f"and a training resumes from its last checkpoint"
  )


def run(fn, *args, **kwargs):
  """fn(*args, **kwargs); a UserError ends the process with its one-line message (exit 2),
  a preemption with its own message and exit code, a full disk with one line saying what to
  free (exit 2), a SIGINT outside the training loop with one line (exit 130)."""
  from sagan_jax.errors import Preempted, UserError, disk_full

  try:
    return fn(*args, **kwargs)
  except UserError as e:
    _fail(" ".join(str(e).split()))
  except Preempted as e:
    print(str(e), file=sys.stderr)
    sys.exit(e.exit_code)
  except KeyboardInterrupt:
    signals.stopped_outside_the_loop(signal.SIGINT)
  except Exception as e:  # pylint: disable=broad-except
    full = disk_full(e)
    if full is None:
      raise
    _fail(disk_full_message(full))
