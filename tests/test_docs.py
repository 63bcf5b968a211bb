"""The README is a front page and the docs a site: links resolve, the site builds strictly, the
README's model snippet runs as written (in the core install's terms), numbers that change live
in one place."""

import glob
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = sorted(["README.md", "BENCHMARKS.md", "benchmarks/HISTORY.md", "CONTRIBUTING.md",
                *(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))])
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)|<img[^>]+src=\"([^\"]+)\"")


def _read(page):
    with open(os.path.join(ROOT, page)) as f:
        return f.read()


def _without_code(text):
    return re.sub(r"```.*?```", "", text, flags=re.S)


def test_the_readme_is_a_front_page():
    readme = _read("README.md")
    assert len(readme.splitlines()) <= 150
    for install in ("'.[train]'", "cuda12", "tpu", "Apple silicon"):
        assert install in readme
    assert os.path.exists(os.path.join(ROOT, "LICENSE"))
    assert "Apache License" in _read("LICENSE")
    assert len(glob.glob(os.path.join(ROOT, "docs", "*.md"))) >= 5


@pytest.mark.parametrize("page", PAGES)
def test_relative_links_and_images_resolve(page):
    broken = []
    for match in LINK.finditer(_without_code(_read(page))):
        target = (match.group(1) or match.group(2)).split("#")[0]
        if not target or re.match(r"^[a-z]+:", target):  # an anchor, https:, mailto:
            continue
        if not os.path.exists(os.path.join(ROOT, os.path.dirname(page), target)):
            broken.append(target)
    assert not broken, f"{page}: {broken}"


def test_the_site_builds_strictly(tmp_path):
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                             str(tmp_path / "site")], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    benchmarks = (tmp_path / "site" / "benchmarks" / "index.html").read_text()
    assert "6,768 img/s" in benchmarks  # the current table, included from BENCHMARKS.md


def test_the_readme_model_snippet_runs(tmp_path):
    readme = _read("README.md")
    section = readme[readme.index("## Using a model"):]
    snippet = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    check = ("\nassert logits.shape == (4, 10) and 'batch_stats' in new_state"
             "\nprint(served.in_avals)")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    result = subprocess.run([sys.executable, "-c", snippet + check], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "float32[b,64,64,3]" in result.stdout  # the exported input: any batch


def test_volatile_numbers_live_in_one_place():
    """The suite's size and time are written in docs/development.md only."""
    pattern = re.compile(r"\b\d+ (tests|passed)\b.*\bminutes\b|\bminutes\b.*\b\d+ (tests|passed)\b")
    holders = [page for page in PAGES if pattern.search(_read(page))]
    assert holders == ["docs/development.md"], holders


def test_the_dense_task_example_trains_a_step(tmp_path):
    """docs/backbones.md's segmentation head on the features_only backbone: one step runs, the
    loss is finite and the backbone's batch-norm statistics moved."""
    page = _read("docs/backbones.md")
    section = page[page.index("## A dense task on top"):]
    snippet = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    check = ("\nimport numpy as np"
             "\nassert np.isfinite(float(loss))"
             "\nfresh = model.init(jax.random.key(0), images, train=False)"
             "\nmean = variables['batch_stats']['backbone']['bn1']['mean']"
             "\nassert not np.allclose(mean, fresh['batch_stats']['backbone']['bn1']['mean'])"
             "\nprint('ok', float(loss))")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    result = subprocess.run([sys.executable, "-c", snippet + check], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("ok")
