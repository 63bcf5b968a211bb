"""How close two arrays, or two pytrees of arrays, are: the measure every parity test uses."""

import jax
import numpy as np


def relative_error(ours, reference) -> float:
    """Largest absolute difference, relative to the reference's largest magnitude (float64)."""
    ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
    return float(np.abs(ours - reference).max() / max(np.abs(reference).max(), 1e-300))


def assert_trees_close(ours, reference, tolerance: float) -> float:
    """Every leaf within `tolerance` (`relative_error`); returns the worst leaf's error."""
    flat_reference = dict(jax.tree_util.tree_leaves_with_path(reference))
    errors = {jax.tree_util.keystr(path): relative_error(leaf, flat_reference[path])
              for path, leaf in jax.tree_util.tree_leaves_with_path(ours)}
    worst = max(errors, key=errors.get)
    assert errors[worst] < tolerance, (worst, errors[worst])
    return errors[worst]
