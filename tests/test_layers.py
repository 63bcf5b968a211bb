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
