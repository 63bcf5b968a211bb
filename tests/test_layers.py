"""Layers point one way: the packages below the training code import nothing from it, read
from the source (every import, module level or inside a function)."""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "resnet_jax"


def _above(*packages: str) -> tuple[str, ...]:
    return tuple(f"resnet_jax.{name}" for name in packages)


# package -> what it may not import. From the bottom: the models (plain Flax), the kernels, the
# data, multi-process start-up and weights interop; the tasks; the plan (the config resolved
# into specs); a run on disk and a run's model for use (runs/); training; then what uses them
# all (retrieval, experiments, benchmarks, the service) and the commands (cli/) on top.
_USERS = ("retrieval", "experiments", "bench", "serve", "cli")
FORBIDDEN = {
    "models": _above("train", "runs", "plan", "tasks", "cpu", "data", "interop", "launch",
                     *_USERS),
    "cpu": _above("train", "runs", "plan", "tasks", "data", *_USERS),
    "data": _above("train", "runs", "plan", "tasks", "interop", *_USERS),
    "launch": _above("train", "runs", "plan", "tasks", *_USERS),
    "interop": _above("train", "runs", "plan", "tasks", *_USERS),
    "tasks": _above("train", "runs", "plan", "models", "data", "interop", "launch", "cpu",
                    *_USERS),
    "plan": _above("train", "runs", *_USERS),
    "runs": _above("train", *_USERS),
    "train": _above(*_USERS),
    "retrieval": _above("train", "experiments", "bench", "serve", "cli"),
    "serve": _above("train", "experiments", "bench", "cli"),
    "experiments": _above("bench", "cli"),
    "bench": _above("experiments", "cli"),
}
LEAVES = ("files.py", "errors.py", "extras.py")  # import nothing from the package but errors
LEAF_MAY_IMPORT = ("resnet_jax.errors",)


def _is_main_block(node) -> bool:
    """`if __name__ == "__main__":`, where a library module starts its command (in cli/)."""
    test = getattr(node, "test", None)
    return (isinstance(node, ast.If) and isinstance(test, ast.Compare)
            and isinstance(test.left, ast.Name) and test.left.id == "__name__")


def _imports(path: pathlib.Path) -> list[str]:
    names = []
    tree = ast.parse(path.read_text())
    tree.body = [node for node in tree.body if not _is_main_block(node)]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    return names


def test_every_package_has_its_place_in_the_table():
    packages = {path.parent.name for path in PACKAGE.glob("*/__init__.py")}
    assert packages - {"configs", "cli"} == set(FORBIDDEN), packages


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_lower_layers_import_nothing_from_higher_ones(package):
    found = [(path.name, name) for path in sorted((PACKAGE / package).glob("*.py"))
             for name in _imports(path)
             if name.startswith(FORBIDDEN[package])]
    assert not found, found


@pytest.mark.parametrize("leaf", LEAVES)
def test_leaf_modules_import_nothing_from_the_package(leaf):
    found = [name for name in _imports(PACKAGE / leaf)
             if name.startswith("resnet_jax") and not name.startswith(LEAF_MAY_IMPORT)]
    assert not found, found


# --- the shape of the code: short functions, thin command-line modules ---------------------

MAX_FUNCTION_LINES = 80  # without the docstring; configs (tables of values) aside
MAX_CLI_MODULE_LINES = 100


def _function_lengths(path: pathlib.Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            first = body[0]
            has_docstring = (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                             and isinstance(first.value.value, str))
            start = body[1].lineno if has_docstring and len(body) > 1 else first.lineno
            yield node.name, node.end_lineno - start + 1


def test_no_function_is_longer_than_a_screen():
    long = [f"{path.relative_to(PACKAGE)}:{name} ({lines} lines)"
            for path in sorted(PACKAGE.rglob("*.py")) if "configs" not in path.parts
            for name, lines in _function_lengths(path) if lines > MAX_FUNCTION_LINES]
    assert not long, long


def test_command_line_modules_are_thin():
    thick = [f"{path.name} ({len(path.read_text().splitlines())} lines)"
             for path in sorted((PACKAGE / "cli").glob("*.py"))
             if len(path.read_text().splitlines()) > MAX_CLI_MODULE_LINES]
    assert not thick, thick


def test_usage_lines_in_module_docstrings_keep_their_line_breaks():
    """A command's usage in its module docstring is its --help text: a `\\` at a line's end
    inside a plain string joins the lines; it must be written `\\\\` (or the string raw)."""
    import re

    joined = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = path.read_text()
        tree = ast.parse(source)
        if not (tree.body and isinstance(tree.body[0], ast.Expr)
                and isinstance(tree.body[0].value, ast.Constant)):
            continue
        raw = ast.get_source_segment(source, tree.body[0])
        if not raw.startswith(("r", "R")) and re.search(r"(?<!\\)\\\n", raw):
            joined.append(str(path.relative_to(PACKAGE)))
    assert not joined, joined


# --- the structure's rules: sizes, the model's part names, tasks, specs -----------------------

MAX_MODULE_LINES = 400


def test_no_module_is_longer_than_400_lines():
    long = [f"{path.relative_to(PACKAGE)} ({lines} lines)" for path in sorted(PACKAGE.rglob("*.py"))
            if (lines := len(path.read_text().splitlines())) > MAX_MODULE_LINES]
    assert not long, long


def _string_constants(path: pathlib.Path) -> set[str]:
    return {node.value for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Constant) and isinstance(node.value, str)}


def test_only_the_model_spells_its_part_names():
    """Freezing, layer decay, warm starts, exports and embeddings ask `models.parts`; the
    torchvision key mapping is the one other place that knows the names."""
    allowed = {PACKAGE / "interop" / "torchvision_weights.py"}
    spelled = [f"{path.relative_to(PACKAGE)}: {name}" for path in sorted(PACKAGE.rglob("*.py"))
               if "models" not in path.relative_to(PACKAGE).parts and path not in allowed
               for name in _string_constants(path) & {"fc", "head_hidden", "conv1", "layer1"}]
    assert not spelled, spelled


def test_the_loop_the_step_and_batching_do_not_branch_on_the_task():
    named = [path for path in ("train/loop.py", "train/steps.py", "data/batching.py",
                               "train/evaluation.py", "train/metrics.py", "runs/inference.py")
             if "multilabel" in (PACKAGE / path).read_text()]
    assert not named, named


def test_models_and_the_data_pipeline_read_no_config():
    """They receive their specs (`resnet_jax.plan`); `tf.config` is TensorFlow's own."""
    readers = []
    for path in sorted([*(PACKAGE / "models").glob("*.py"), *(PACKAGE / "data").glob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id == "config" or isinstance(node, ast.Name)
                    and node.id == "ConfigDict"):
                readers.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert not readers, readers


def test_pointers_into_the_docs_resolve():
    """Docstrings and --help name README sections and docs/ pages: each must exist (sections
    that moved to docs/ left stale pointers behind once)."""
    import re

    root = PACKAGE.parent
    headings = {line.lstrip("#").strip() for line in (root / "README.md").read_text()
                .splitlines() if line.startswith("#")}
    stale = []
    for path in sorted([*PACKAGE.rglob("*.py"), *(root / "tools").glob("*.py")]):
        text = path.read_text()
        for section in re.findall(r"README(?:'s|,)\s*\"([^\"]+)\"", text):
            if section not in headings:
                stale.append(f"{path.name}: README section {section!r}")
        for page in re.findall(r"\bdocs/([\w-]+\.md)", text):
            if not (root / "docs" / page).exists():
                stale.append(f"{path.name}: docs/{page}")
    assert not stale, stale
