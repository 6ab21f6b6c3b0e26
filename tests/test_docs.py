"""The documentation against the code: docs/cli/<tool>.txt against each tool's --helpfull, and
the commands, flags, config fields, make targets and relative links of README.md and
docs/**/*.md against what exists.

The drift check reads a tool's flags from its committed docs/cli/<tool>.txt (which the first
tests keep equal to the tool's --helpfull) plus absl's own flags (--helpfull, --verbosity, …),
config fields from configs/default.py's get_config() (every config changes only its values;
config.RENAMED_FIELDS' old top-level names are read too), make targets from the Makefile.
Commands are `python -m sagan_jax…` and `make …` inside code spans and shell code blocks; a
value, a placeholder (DIR, N, X, <field>, …) or an optional part in brackets is not checked,
only the names: module, tool, --flag, --config.a.b (and ablations' --set a.b=…), --config's
configs/<name>.py file, make target.
"""

import difflib
import functools
import glob
import importlib
import importlib.util
import os
import re
import urllib.parse

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load_cli_help():
  spec = importlib.util.spec_from_file_location("cli_help", os.path.join(ROOT, "tools", "cli_help.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


cli_help = _load_cli_help()

# docs/cli/<tool>.txt against the tools


@pytest.fixture(scope="module")
def current_help():
  """{tool: what tools/cli_help.py writes for it now}: the tools started in parallel, once."""
  return cli_help.all_help()


@pytest.mark.integration
@pytest.mark.parametrize("tool", cli_help.TOOLS)
def test_committed_help_is_the_tools(tool, current_help):
  path = cli_help.help_path(tool)
  rel = os.path.relpath(path, ROOT)
  assert os.path.exists(path), f"{rel} is missing: `make cli-help` writes it"
  with open(path, encoding="utf-8") as f:
    committed = f.read()
  if committed != current_help[tool]:
    diff = difflib.unified_diff(
      committed.splitlines(True), current_help[tool].splitlines(True), rel, f"python -m {tool} --helpfull"
    )
    pytest.fail(f"{rel} differs from the tool's help; `make cli-help` rewrites it:\n{''.join(diff)}")


def test_every_tool_has_a_help_file():
  assert cli_help.discover_tools() == sorted(cli_help.TOOLS), "tools/cli_help.py TOOLS: the package's tools"
  assert sorted(os.listdir(os.path.join(ROOT, "docs", "cli"))) == sorted(
    os.path.basename(cli_help.help_path(tool)) for tool in cli_help.TOOLS
  )


def test_help_keeps_the_package_sections_only():
  raw = (
    "Usage of the tool.\n\n  python -m sagan_jax.x --a=1\n\nflags:\n\n"
    f"{ROOT}/sagan_jax/x.py:\n  --a: the a flag  \n    (default: '1')\n\n"
    "absl.app:\n  --[no]helpfull: show full help\n\n"
    "jax._src.config:\n  --jax_platforms: platforms\n\n"
    "sagan_jax.cli:\n  --step: a step\n\n"
    "absl.flags:\n  --flagfile: more flags\n"
  )
  assert cli_help.keep_own_flags(raw) == (
    "Usage of the tool.\n\n  python -m sagan_jax.x --a=1\n\nflags:\n\n"
    "sagan_jax/x.py:\n  --a: the a flag\n    (default: '1')\n\n"
    "sagan_jax.cli:\n  --step: a step\n"
  )


# The drift check

CONFIG_FLAGS = {"config"}  # the config-file flags (ml_collections): --config.a.b=… overrides
ABSL_FLAGS = {"help": True, "helpfull": True, "helpshort": True, "helpxml": True, "flagfile": False}
SHELL_LANGUAGES = {"", "bash", "sh", "shell", "console", "text", "zsh"}
COMMAND = re.compile(r"(?<![\w.-])python3?(?:\.\d+)?\s+-m\s+(sagan_jax(?:\.\w+)*)")
# where a command ends: the next one, a shell separator, a pipe into another program (a `|`
# before a --flag or an optional part is a usage line's alternative)
COMMAND_END = re.compile(r"&&|\|\||;|\\?\|(?=\s+[^\s\-\[])|(?<![\w.-])python3?(?:\.\d+)?\s+-m\s")
FLAG = re.compile(r"(?<![\w-])--(\[no\])?([A-Za-z_]\w*)(\.[^\s=\[\]|`'\"]*)?")
SET_FIELD = re.compile(r"(?<![\w-])--set(?:=|\s+)([^\s=]+)=")
CONFIG_FILE = re.compile(r"(?<![\w-])--(?:base_)?config=([^\s\[\]|`'\"]+)")
MAKE = re.compile(
  r"(?:^|[;&|(`]|\$\()\s*(?:[A-Z_][A-Z0-9_]*=\S*\s+)*(?:(?:/usr/bin/)?time(?:\s+-v)?\s+|sudo\s+|nohup\s+)*"
  r"make((?:[ \t]+[^\s;&|)`#]+)*)",
  re.M,
)
LINK = re.compile(r"\]\(\s*(<[^>\n]*>|[^)\s]+)(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)")
LINK_DEFINITION = re.compile(r"^ {0,3}\[[^\]\n]+\]:\s*(<[^>\n]*>|\S+)", re.M)
HTML_LINK = re.compile(r"<(?:img|a|source)\b[^>]*?\b(?:src|href)=\"([^\"]+)\"", re.I)
FENCE = re.compile(r"^\s*(`{3,}|~{3,})\s*([^`\s]*)")
IDENT = re.compile(r"^[a-z_][a-z0-9_]*$")
PUNCTUATION = ".,;:)"  # after a name, the sentence's


def _help_flags(text: str) -> dict:
  """{flag name: boolean?} of a docs/cli/<tool>.txt."""
  flags = {}
  for boolean, name in re.findall(r"^  (?:-\S,)?--(\[no\])?(\w+):", text, re.M):
    flags[name] = bool(boolean)
  return flags


def _config_fields(config, prefix="") -> set:
  fields = set()
  for name, value in config.items():
    fields.add(prefix + name)
    if hasattr(value, "items") and type(value).__name__ in ("ConfigDict", "FrozenConfigDict"):
      fields |= _config_fields(value, f"{prefix}{name}.")
  return fields


def _make_targets() -> set:
  with open(os.path.join(ROOT, "Makefile"), encoding="utf-8") as f:
    text = f.read()
  targets = set()
  for line in text.splitlines():
    match = re.match(r"^([^\s#:=][^:=]*?)\s*::?(?!=)", line)
    if match and not line.startswith(("ifeq", "ifneq", "ifdef", "ifndef", "override ", "export ", "$(")):
      targets.update(t for t in match.group(1).split() if not t.startswith("."))  # not .PHONY
  return targets


@functools.cache
def known() -> dict:
  """What the docs may name: tools and their flags, config fields, make targets."""
  from absl import app, logging  # noqa: F401  (their flags: every tool has them)
  from absl import flags as absl_flags

  from sagan_jax.config import RENAMED_FIELDS

  common = dict(ABSL_FLAGS)
  for module in ("absl.app", "absl.logging"):
    for flag in absl_flags.FLAGS.flags_by_module_dict().get(module, []):
      common[flag.name] = flag.boolean
  tools = {}
  for tool in cli_help.TOOLS:
    path = cli_help.help_path(tool)
    if os.path.exists(path):
      with open(path, encoding="utf-8") as f:
        tools[tool] = {**common, **_help_flags(f.read())}
  config = importlib.import_module("configs.default").get_config()
  return {
    "tools": tools,
    "fields": _config_fields(config),
    "renamed": set(RENAMED_FIELDS),
    "targets": _make_targets(),
  }


def _code(text: str):
  """(line number, code) of every code span and every logical line of a shell code block (`\\`
  continuations joined, # comments dropped), and the text with all code blanked out."""
  lines = text.split("\n")
  prose, code, fence, block, start = [], [], None, [], 0
  for number, line in enumerate(lines, 1):
    match = FENCE.match(line)
    if fence is None and match:
      fence, language = match.group(1), match.group(2).lower()
      prose.append("")
      continue
    if fence is not None:
      prose.append("")
      if re.match(rf"^\s*{re.escape(fence[0])}{{{len(fence)},}}\s*$", line):
        fence = None
      elif language in SHELL_LANGUAGES:
        stripped = re.sub(r"(?:^|\s)#.*$", "", line).rstrip()
        if not block:
          start = number
        block.append(stripped.removesuffix("\\"))
        if not stripped.endswith("\\"):
          code.append((start, " ".join(block)))
          block = []
      continue
    prose.append(line)
  if block:
    code.append((start, " ".join(block)))
  prose = "\n".join(prose)
  blanked = list(prose)
  for span in re.finditer(r"(?<!`)(`+)(?!`)((?:(?!\n[ \t]*\n).)+?)(?<!`)\1(?!`)", prose, re.S):
    code.append((prose.count("\n", 0, span.start()) + 1, span.group(2)))
    for i in range(span.start(), span.end()):
      if blanked[i] != "\n":
        blanked[i] = " "
  return sorted(code, key=lambda item: item[0]), "".join(blanked)


def _tool_spec(module: str):
  """The spec `python -m module` runs (a package's __main__), or None."""
  try:
    spec = importlib.util.find_spec(module)
    if spec is not None and spec.submodule_search_locations is not None:
      spec = importlib.util.find_spec(f"{module}.__main__")
    return spec
  except (ImportError, ValueError):
    return None


def _check_field(where: str, flag: str, path: str, counts: dict, failures: list):
  """A config field named on a command line (--config.a.b=…, --set a.b=…)."""
  parts = path.split(".")
  if not all(IDENT.match(part) for part in parts):
    return  # a placeholder: --config.X=…, --config.<field>=<value>
  counts["config fields"] += 1
  if path not in known()["fields"] and not (len(parts) == 1 and path in known()["renamed"]):
    failures.append(f"{where}: {flag}{path}: configs/default.py has no field {path!r}")


def check_markdown(text: str, base: str, name: str = "<text>") -> tuple:
  """(failures, counts) of one markdown text whose relative links start at the folder ``base``."""
  known_ = known()
  failures = []
  counts = dict.fromkeys(("commands", "flags", "config fields", "config files", "make targets", "links"), 0)
  code, prose = _code(text)
  for line, segment in code:
    where = f"{name}:{line}"
    for command in COMMAND.finditer(segment):
      module = command.group(1)
      if segment.startswith(("…", ".…", "...", ".<", "<", ".{", ".*"), command.end()) or re.search(
        r"\.[A-Z_]+$", module
      ):
        continue  # a placeholder: python -m sagan_jax…, sagan_jax.<tool>, sagan_jax.TOOL
      end = COMMAND_END.search(segment, command.end())
      rest = segment[command.end() : end.start() if end else len(segment)]
      counts["commands"] += 1
      if _tool_spec(module) is None:
        failures.append(f"{where}: python -m {module}: no such module")
        continue
      if module not in known_["tools"]:
        failures.append(
          f"{where}: python -m {module}: not a tool with a docs/cli help file (tools/cli_help.py)"
        )
        continue
      tool_flags = known_["tools"][module]
      for flag in FLAG.finditer(rest):
        negated, flag_name, fields = flag.group(1), flag.group(2), (flag.group(3) or "").rstrip(PUNCTUATION)
        counts["flags"] += 1
        boolean = tool_flags.get(flag_name)
        if boolean is None and flag_name.startswith("no") and tool_flags.get(flag_name[2:]):
          boolean = True
        if boolean is None:
          failures.append(f"{where}: python -m {module}: no flag --{flag_name}")
        elif negated and not boolean:
          failures.append(f"{where}: python -m {module}: --[no]{flag_name}: not a boolean flag")
        elif fields and flag_name not in CONFIG_FLAGS:
          failures.append(
            f"{where}: python -m {module}: --{flag_name}{fields}: --{flag_name} is no config file"
          )
      for match in SET_FIELD.finditer(rest if module == "sagan_jax.ablations" else ""):
        _check_field(where, "--set ", match.group(1), counts, failures)
    for flag in FLAG.finditer(segment):  # every --config.a.b, in a command or alone
      fields = (flag.group(3) or "").rstrip(PUNCTUATION)
      if flag.group(2) in CONFIG_FLAGS and fields:
        _check_field(where, f"--{flag.group(2)}.", fields[1:], counts, failures)
    for match in CONFIG_FILE.finditer(segment):
      path = match.group(1).split(":")[0].rstrip(".,;)")
      if re.match(r"^configs/\w+\.py$", path):
        counts["config files"] += 1
        if not os.path.exists(os.path.join(ROOT, path)):
          failures.append(f"{where}: {match.group(0)}: no file {path}")
    for match in MAKE.finditer(segment):
      for word in match.group(1).split():
        target = word.rstrip(PUNCTUATION + "'\"")
        if re.match(r"^[a-z0-9][\w.-]*$", target):  # not an option, a VAR=value, a placeholder
          counts["make targets"] += 1
          if target not in known_["targets"]:
            failures.append(f"{where}: make {target}: the Makefile has no target {target!r}")
        if target != word:
          break  # `make test-fast: its unit tier`: the sentence goes on
  links = [m for pattern in (LINK, LINK_DEFINITION, HTML_LINK) for m in pattern.finditer(prose)]
  for match in sorted(links, key=lambda m: m.start()):
    target = match.group(1).strip("<>")
    if not target or target.startswith("#") or re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", target):
      continue  # an anchor of the page, a URL (http, https, mailto, gs, …)
    counts["links"] += 1
    path = urllib.parse.unquote(re.split(r"[#?]", target)[0])
    full = os.path.join(ROOT, path.lstrip("/")) if path.startswith("/") else os.path.join(base, path)
    if not os.path.exists(full):
      failures.append(f"{name}:{prose.count(chr(10), 0, match.start()) + 1}: link {target}: no such file")
  return failures, counts


def doc_files() -> list:
  files = [os.path.join(ROOT, "README.md")]
  files += sorted(glob.glob(os.path.join(ROOT, "docs", "**", "*.md"), recursive=True))
  return [path for path in files if os.path.isfile(path)]


def check_docs() -> tuple:
  """(failures, counts) of README.md and every docs/**/*.md."""
  failures, counts = [], {}
  for path in doc_files():
    with open(path, encoding="utf-8") as f:
      found, found_counts = check_markdown(f.read(), os.path.dirname(path), os.path.relpath(path, ROOT))
    failures += found
    for key, value in found_counts.items():
      counts[key] = counts.get(key, 0) + value
  return failures, counts


def test_docs_name_what_exists():
  failures, counts = check_docs()
  print(f"checked in {len(doc_files())} files: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
  assert counts["commands"] > 0 and counts["links"] > 0, counts
  assert not failures, f"{len(failures)} names in the docs that do not exist:\n" + "\n".join(failures)


BROKEN = """\
# A page

```bash
python -m sagan_jax.main --config=configs/fashion_mnist.py --workdir=runs/x \\
    --no_such_flag=1 --config.model.no_such_field=2   # a comment: make nothing
make no-such-target
```

See [gone](missing/page.md#part), ![an image](gone.png) and `python -m sagan_jax.no_such_tool --x`;
`python -m sagan_jax.plan --config=configs/no_such_config.py --target=h100` and
`python -m sagan_jax.sample --nooverwrite --[no]seed=1 --workdir.x=1`.
"""
FINE = """\
```bash
.venv/bin/python -m sagan_jax.sample --workdir=RUN [--step=N] --out=DIR|FILE.npz \\
    [--per_class=10 | --num=N] [--interpolate [--interpolation=slerp|lerp]] --nooverwrite | tee log
python -m sagan_jax.main --config=configs/<name>.py[:smoke] --workdir=DIR [--config.<field>=<value> …]
ACCELERATOR=cuda make venv && make test-fast   # runs the unit tier
```

```python
make = sagan_jax.load("runs/x")  # not a shell block: make nothing here
```

`python -m sagan_jax.evaluate --workdir=… [--config=… [--config.X=…]] --config.eval_every_steps=5
--helpfull`, `python -m sagan_jax.ablations --sweep=fig3 --set model.ch=2 --set FIELD=VALUE`,
`--config.evals.periodic.every_steps=0`, `make <target>`, `python -m sagan_jax…`, `make …`,
`python -m sagan_jax.<tool> --helpfull`, `/usr/bin/time -v make train`.
[the readme](README.md#install), [a site](https://example.com/x.md), [mail](mailto:a@b.c),
[this page](#a-page), [a bucket](gs://bucket/run), ![real](docs/cli/sagan_jax.main.txt)
"""


def test_the_drift_check_finds_broken_names():
  failures, counts = check_markdown(BROKEN, ROOT, "broken.md")
  assert failures == [
    "broken.md:4: python -m sagan_jax.main: no flag --no_such_flag",
    "broken.md:4: --config.model.no_such_field: configs/default.py has no field 'model.no_such_field'",
    "broken.md:6: make no-such-target: the Makefile has no target 'no-such-target'",
    "broken.md:9: python -m sagan_jax.no_such_tool: no such module",
    "broken.md:10: --config=configs/no_such_config.py: no file configs/no_such_config.py",
    "broken.md:11: python -m sagan_jax.sample: --[no]seed: not a boolean flag",
    "broken.md:11: python -m sagan_jax.sample: --workdir.x: --workdir is no config file",
    "broken.md:9: link missing/page.md#part: no such file",
    "broken.md:9: link gone.png: no such file",
  ]
  assert counts["links"] == 2 and counts["make targets"] == 1


def test_the_drift_check_passes_what_exists():
  failures, counts = check_markdown(FINE, ROOT, "fine.md")
  assert failures == []
  assert counts == {
    "commands": 4,
    "flags": 19,
    "config fields": 3,
    "config files": 0,
    "make targets": 3,
    "links": 2,
  }
