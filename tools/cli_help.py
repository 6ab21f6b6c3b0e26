#!/usr/bin/env python3
"""Writes each command-line tool's full help into docs/cli/<tool>.txt (make cli-help).

  python tools/cli_help.py            # regenerates every docs/cli/<tool>.txt
  python tools/cli_help.py --check    # exit 1, listing the files that differ from the tools' help

Each tool runs as `python -m <tool> --helpfull` from the repository root, in a fixed
environment (COLUMNS=100, JAX on the CPU, TensorFlow quiet), all of them at once. Of absl's
full help only the tool's usage text and the flags of the package's own modules are kept (the
tool's file and sagan_jax.*): absl's, JAX's, orbax's and TensorFlow's sections change with the
library versions. The repository's absolute path is written relative, the home folder as ~.
tests/test_docs.py fails when a committed file differs from what this writes.
"""

import argparse
import concurrent.futures
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DIR = os.path.join(ROOT, "docs", "cli")
PACKAGE = "sagan_jax"
TOOLS = (
  "sagan_jax.main",
  "sagan_jax.evaluate",
  "sagan_jax.visualize",
  "sagan_jax.report",
  "sagan_jax.sample",
  "sagan_jax.convert",
  "sagan_jax.plan",
  "sagan_jax.ablations",
  "sagan_jax.fetch_fashion_mnist",
)
ENV = {
  "COLUMNS": "100",  # absl wraps the help to the terminal's width (shutil.get_terminal_size)
  "LINES": "50",
  "TF_CPP_MIN_LOG_LEVEL": "3",
  "JAX_PLATFORMS": "cpu",
  "PYTHONIOENCODING": "utf-8",
}
TIMEOUT_S = 300
_SECTION = re.compile(r"^(\S.*):$")  # absl's header of one module's flags; flag lines are indented


def help_path(tool: str) -> str:
  """docs/cli/<tool>.txt, absolute."""
  return os.path.join(OUT_DIR, f"{tool}.txt")


def discover_tools(root: str = ROOT) -> list:
  """The package's modules run as `python -m`: a module with a __main__ block, a package with a
  __main__.py (what TOOLS must list)."""
  tools = []
  for folder, dirs, files in os.walk(os.path.join(root, PACKAGE)):
    dirs[:] = sorted(d for d in dirs if d != "__pycache__")
    module = os.path.relpath(folder, root).replace(os.sep, ".")
    if "__main__.py" in files:
      tools.append(module)
    for name in sorted(files):
      if not name.endswith(".py") or name in ("__init__.py", "__main__.py"):
        continue
      with open(os.path.join(folder, name), encoding="utf-8") as f:
        if re.search(r"^if __name__ == .__main__.:", f.read(), re.M):
          tools.append(f"{module}.{name[:-3]}")
  return sorted(tools)


def raw_help(tool: str) -> str:
  """What `python -m <tool> --helpfull` prints (absl exits 1 after it)."""
  env = dict(os.environ, **ENV)
  env.pop("PYTHONSAFEPATH", None)  # -m runs the repository's package: its folder first on sys.path
  proc = subprocess.run(
    [sys.executable, "-m", tool, "--helpfull"],
    cwd=ROOT,
    env=env,
    capture_output=True,
    timeout=TIMEOUT_S,
  )
  out = proc.stdout.decode("utf-8")
  if proc.returncode not in (0, 1) or not re.search(r"^flags:$", out, re.M):
    err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
    raise RuntimeError(
      f"python -m {tool} --helpfull exited {proc.returncode} without its help: "
      f"{err[-1] if err else out.strip()[-200:]!r}"
    )
  return out


def _without_machine_paths(text: str) -> str:
  roots = {ROOT, os.path.realpath(ROOT)}
  for root in sorted(roots, key=len, reverse=True):
    text = text.replace(root + os.sep, "")
  home = os.path.expanduser("~")
  if home not in ("", "/", "~"):
    text = re.sub(re.escape(home) + r"(?=[/\s'\"]|$)", "~", text, flags=re.M)
  return text


def keep_own_flags(text: str) -> str:
  """absl's --helpfull text with only the usage and the package's module sections (the tool's
  file and sagan_jax.*), machine paths removed, trailing blanks stripped."""
  lines = _without_machine_paths(text).splitlines()
  starts = [i for i, line in enumerate(lines) if line == "flags:"]
  if not starts:
    raise ValueError("no 'flags:' line: not absl's --helpfull text")
  at = starts[-1]  # the usage text may hold such a line too; the flags' part holds none
  head, sections, current = lines[: at + 1], [], None
  for line in lines[at + 1 :]:
    header = _SECTION.match(line)
    if header:
      current = [line] if header.group(1).startswith(PACKAGE) else None
      if current is not None:
        sections.append(current)
    elif current is not None and line.strip():
      current.append(line)
  blocks = ["\n".join(line.rstrip() for line in head).rstrip()]
  blocks += ["\n".join(line.rstrip() for line in section) for section in sections]
  return "\n\n".join(blocks) + "\n"


def tool_help(tool: str) -> str:
  """The text docs/cli/<tool>.txt holds."""
  return keep_own_flags(raw_help(tool))


def all_help(tools=TOOLS, jobs: int | None = None) -> dict:
  """{tool: its help text}, the tools run in parallel."""
  jobs = jobs or min(len(tools), max(2, os.cpu_count() or 2) * 2)
  with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
    texts = pool.map(tool_help, tools)
    return dict(zip(tools, texts, strict=True))


def differing(texts: dict) -> list:
  """The help files (relative paths) that differ from ``texts``, are missing, or belong to no tool."""
  out = []
  for tool, text in texts.items():
    path = help_path(tool)
    committed = None
    if os.path.exists(path):
      with open(path, encoding="utf-8") as f:
        committed = f.read()
    if committed != text:
      out.append(os.path.relpath(path, ROOT) + ("" if committed is not None else " (missing)"))
  if os.path.isdir(OUT_DIR):
    wanted = {os.path.basename(help_path(tool)) for tool in texts}
    for name in sorted(os.listdir(OUT_DIR)):
      if name.endswith(".txt") and name not in wanted:
        out.append(os.path.relpath(os.path.join(OUT_DIR, name), ROOT) + " (no such tool)")
  return out


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a file differs")
  args = parser.parse_args(argv)
  texts = all_help()
  if args.check:
    stale = differing(texts)
    if stale:
      print("differs from the tool's --helpfull (make cli-help rewrites it):", file=sys.stderr)
      for path in stale:
        print(f"  {path}", file=sys.stderr)
      return 1
    print(f"docs/cli: the {len(texts)} help files are current")
    return 0
  os.makedirs(OUT_DIR, exist_ok=True)
  for stale in differing(texts):
    if stale.endswith(" (no such tool)"):
      os.remove(os.path.join(ROOT, stale.removesuffix(" (no such tool)")))
  for tool, text in texts.items():
    with open(help_path(tool), "w", encoding="utf-8") as f:
      f.write(text)
    print(os.path.relpath(help_path(tool), ROOT))
  return 0


if __name__ == "__main__":
  sys.exit(main())
