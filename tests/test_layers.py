"""Layers point one way: the packages below the training code import nothing from it, read
from the source (every import, module level or inside a function)."""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "resnet_jax"
# package -> what it may not import
FORBIDDEN = {
    "models": ("resnet_jax.train", "resnet_jax.cli", "resnet_jax.experiments", "resnet_jax.cpu",
               "resnet_jax.data", "resnet_jax.interop", "resnet_jax.launch"),
    "cpu": ("resnet_jax.train", "resnet_jax.cli", "resnet_jax.experiments", "resnet_jax.data"),
    "data": ("resnet_jax.train", "resnet_jax.cli", "resnet_jax.experiments"),
    "launch": ("resnet_jax.train", "resnet_jax.cli", "resnet_jax.experiments"),
    "interop": ("resnet_jax.train", "resnet_jax.cli", "resnet_jax.experiments"),
}
LEAVES = ("files.py", "errors.py")  # import nothing from the package


def _imports(path: pathlib.Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_lower_layers_import_nothing_from_higher_ones(package):
    found = [(path.name, name) for path in sorted((PACKAGE / package).glob("*.py"))
             for name in _imports(path)
             if name.startswith(FORBIDDEN[package])]
    assert not found, found


@pytest.mark.parametrize("leaf", LEAVES)
def test_leaf_modules_import_nothing_from_the_package(leaf):
    found = [name for name in _imports(PACKAGE / leaf) if name.startswith("resnet_jax")]
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
