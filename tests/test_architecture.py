"""The dependency rule configs -> bmdjax -> data_prep -> (numpy, pydicom, ...),
checked on the import graph of the source (every import, also inside functions),
the light imports screening relies on, and command modules that hold flags and
`main` only."""

import ast
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("configs", "bmdjax", "data_prep", "launch")
# Which first-party packages each package may import.
ALLOWED = {"data_prep": {"data_prep"}, "bmdjax": {"bmdjax", "data_prep"},
           "configs": {"configs", "bmdjax", "data_prep"},
           "launch": {"launch", "configs", "bmdjax", "data_prep"}}


def _modules():
  for package in PACKAGES:
    for folder, _, files in os.walk(os.path.join(ROOT, package)):
      for name in files:
        if name.endswith(".py"):
          path = os.path.join(folder, name)
          module = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
          yield module.removesuffix(".__init__"), path


def import_graph() -> dict[str, set[str]]:
  """module -> first-party modules it imports (anywhere in its source)."""
  modules = dict(_modules())
  graph = {}
  for module, path in modules.items():
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    found = set()
    for node in ast.walk(tree):
      if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
      else:
        continue
      found |= {n for n in names if n in modules}
    graph[module] = found - {module}
  return graph


def test_packages_import_only_downwards():
  bad = [f"{m} imports {d}" for m, deps in import_graph().items() for d in deps
         if d.split(".")[0] not in ALLOWED[m.split(".")[0]]]
  assert not bad, bad


def test_no_import_cycles():
  graph = import_graph()
  # Package __init__ files re-export their submodules: an edge to the package
  # from inside it is not a cycle.
  state, cycles = {}, []

  def visit(m, stack):
    state[m] = 1
    for d in sorted(graph[m]):
      if m.startswith(d + "."):
        continue
      if state.get(d) == 1:
        cycles.append(" -> ".join(stack[stack.index(d):] + [d]))
      elif d not in state:
        visit(d, stack + [d])
    state[m] = 2

  for m in sorted(graph):
    if m not in state:
      visit(m, [m])
  assert not cycles, cycles


def test_the_graph_sees_imports_inside_functions():
  graph = import_graph()
  assert "bmdjax.detector" in graph["bmdjax.prediction"]  # imported inside a function


def test_screening_does_not_import_tfds():
  code = ("import sys, bmdjax.predict; "
          "print(sorted(m for m in sys.modules if m.startswith('tensorflow_datasets')))")
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.strip() == "[]"


def test_data_prep_is_a_library_without_command_line():
  """The commands live in bmdjax (bmdjax/commands.py); data_prep takes
  arguments, not flags, so nothing there claims a flag or runs as a program."""
  bad = []
  for module, path in _modules():
    if not module.startswith("data_prep"):
      continue
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    for node in ast.walk(tree):
      if isinstance(node, ast.ImportFrom) and node.module == "absl":
        bad += [f"{module} imports absl.{a.name}" for a in node.names if a.name != "logging"]
      if (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
          and getattr(node.test.left, "id", "") == "__name__"):
        bad.append(f"{module} runs as a program")
  assert not bad, bad


def _command_modules() -> list[str]:
  from bmdjax import commands  # pylint: disable=import-outside-toplevel
  return sorted({module for module, _ in commands.COMMANDS.values()})


def _source(module: str) -> ast.Module:
  path = os.path.join(ROOT, *module.split(".")) + ".py"
  return ast.parse(open(path, encoding="utf-8").read(), path)


def _not_flags_and_main(tree: ast.Module) -> list[str]:
  """Top-level statements other than the docstring, imports, `FLAGS =
  flags.FLAGS`, define_flags(), main(argv) and the __main__ block."""
  bad = []
  for i, node in enumerate(tree.body):
    if i == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
      continue  # the docstring: --help's usage text
    if isinstance(node, (ast.Import, ast.ImportFrom)):
      continue
    if isinstance(node, ast.FunctionDef) and node.name in ("define_flags", "main"):
      continue
    if ast.unparse(node) in ("FLAGS = flags.FLAGS",
                             "if __name__ == '__main__':\n    cli.run(main, define_flags, "
                             "doc=__doc__)"):
      continue
    bad.append(f"line {node.lineno}: {ast.unparse(node).splitlines()[0]}")
  return bad


def test_command_modules_hold_flags_and_main_only():
  modules = _command_modules()
  assert "bmdjax.train" in modules and "bmdjax.synthesize" in modules
  bad = {m: _not_flags_and_main(_source(m)) for m in modules}
  assert not any(bad.values()), bad
  assert _not_flags_and_main(ast.parse("def helper():\n  pass\nX = 1\n")) == [
      "line 1: def helper():", "line 3: X = 1"]


def test_libraries_take_no_flags():
  """Every module that is not a command (nor bmdjax.cli, the commands' shared
  flag groups) takes arguments: a library caller is never tied to a command line."""
  commands = set(_command_modules()) | {"bmdjax.cli", "bmdjax.commands"}
  graph = import_graph()
  bad = []
  for module, path in _modules():
    if module in commands or not module.startswith(("bmdjax", "data_prep")):
      continue
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {f"{n.module}.{a.name}" for n in ast.walk(tree)
                 if isinstance(n, ast.ImportFrom) and n.module for a in n.names}
    bad += [f"{module} imports {x}" for x in
            imported & {"absl.flags", "absl.app", "ml_collections.config_flags"}]
    bad += [f"{module} imports the command {d}" for d in graph[module] & commands]
  assert not bad, bad


def test_shared_flags_are_defined_once():
  """A concept several commands take has one flag, with one name and one help
  text, defined in bmdjax/cli.py."""
  where = {}
  for module, path in _modules():
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read(), path)):
      if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
          and node.func.attr.startswith("DEFINE") and node.args
          and isinstance(node.args[0], ast.Constant)):
        where.setdefault(node.args[0].value, []).append(module)
  shared = ("landmark_workdir", "keep_flagged", "min_landmark_confidence", "checkpoint",
            "reference", "coordinator_address", "level", "target_sensitivity", "dicom_dir",
            "fractions")
  assert {name: where.get(name) for name in shared} == {
      name: ["bmdjax.cli"] for name in shared}
