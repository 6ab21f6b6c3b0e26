"""The package's import rule (docs/design.md, The import rule): floors from the bottom up, each
module importing only its own floor or below, no circle, and nothing but `main` importing the
training loop. Every import counts, function-local ones included. The floors are read from the
design page's table, so the page and the code cannot disagree."""

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "sagan_jax"

DESIGN = PACKAGE.parent / "docs" / "design.md"


def read_floors(text: str) -> dict:
  """{module: floor} from the floors table of docs/design.md (the rows after its marker)."""
  floors = {}
  rows = text.split("<!-- floors:", 1)[1].split("\n\n", 1)[0].splitlines()[1:]
  for row in rows:
    cells = [c.strip() for c in row.strip().strip("|").split("|")]
    if len(cells) == 2 and cells[0].isdigit():
      floors.update({m.strip(): int(cells[0]) for m in cells[1].split(",")})
  return floors


# Each module's floor, as docs/design.md states it: a new module must get a row there.
FLOORS = read_floors(DESIGN.read_text())
# Imports nothing of the package but these (the bottom of the house).
MODELS = {m for m in FLOORS if m.startswith("models.")}
SELF_CONTAINED = {
  "errors": set(),
  "signals": set(),
  "losses": set(),
  "augment": set(),
  "flat_update": set(),
  "figures": set(),
  "evaluation.metrics": set(),
  **{m: MODELS for m in MODELS},
}
TOOLS = ("visualize", "evaluate", "report", "ablations.__main__")


def module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(PACKAGE).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_imports(path: pathlib.Path) -> set:
  """The package modules a file imports, wherever the import statement stands."""
  modules = {module_name(p) for p in PACKAGE.rglob("*.py")}
  found = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    else:
      continue
    for name in names:
      if name.startswith("sagan_jax."):
        name = name[len("sagan_jax.") :]
        if name in modules and name:
          found.add(name)
  return found


def import_graph() -> dict:
  graph = {module_name(p): package_imports(p) for p in PACKAGE.rglob("*.py")}
  return {
    m: deps - {m, ""}
    for m, deps in graph.items()
    if m and m not in ("models", "evaluation", "data", "ablations")
  }


def find_cycle(graph: dict):
  state = {}

  def visit(node, trail):
    state[node] = "open"
    for dep in sorted(graph.get(node, ())):
      if state.get(dep) == "open":
        return trail[trail.index(dep) :] + [dep]
      if dep not in state and (cycle := visit(dep, trail + [dep])):
        return cycle
    state[node] = "done"
    return None

  for node in sorted(graph):
    if node not in state and (cycle := visit(node, [node])):
      return cycle
  return None


def test_every_module_has_a_floor():
  unplaced = sorted(set(import_graph()) - set(FLOORS))
  assert not unplaced, f"place these modules on a floor in FLOORS: {unplaced}"


def test_imports_only_flow_down():
  upward = [
    f"{m} (floor {FLOORS[m]}) imports {d} (floor {FLOORS[d]})"
    for m, deps in sorted(import_graph().items())
    if m in FLOORS
    for d in sorted(deps)
    if d in FLOORS and FLOORS[d] > FLOORS[m]
  ]
  assert not upward, "\n".join(upward)


def test_no_circle():
  assert find_cycle(import_graph()) is None, " -> ".join(find_cycle(import_graph()))


def test_only_main_imports_the_training_loop():
  importers = sorted(m for m, deps in import_graph().items() if "train" in deps)
  assert importers == ["main"], importers


def test_nothing_imports_the_ablations():
  # They launch training runs as processes: the package must work without them.
  importers = sorted(
    m
    for m, deps in import_graph().items()
    if not m.startswith("ablations.") and any(d == "ablations" or d.startswith("ablations.") for d in deps)
  )
  assert not importers, importers


def test_the_bottom_imports_nothing_above_it():
  graph = import_graph()
  wrong = {m: sorted(graph[m] - allowed) for m, allowed in SELF_CONTAINED.items() if graph[m] - allowed}
  assert not wrong, wrong


def test_tools_open_runs_through_run():
  graph = import_graph()
  for tool in TOOLS:
    assert "train" not in graph[tool], tool
  assert "run" in graph["visualize"] and "run" in graph["evaluate"]


def test_the_floors_table_is_read_whole():
  assert FLOORS["errors"] == 0 and FLOORS["main"] == max(FLOORS.values())
  assert len(FLOORS) == len(import_graph()), (len(FLOORS), len(import_graph()))


def test_the_rule_sees_function_local_imports(tmp_path):
  source = tmp_path / "x.py"
  source.write_text("def f():\n  from sagan_jax import train\n  import sagan_jax.figures\n")
  assert package_imports(source) == {"train", "figures"}
  assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
