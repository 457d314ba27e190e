"""Sphinx configuration of the documentation site (``sphinx-build -W -n docs docs/_build/html``).

Why Sphinx: the docstrings are numpydoc, which Sphinx reads natively (numpydoc),
myst-nb renders the notebooks (executed during the build) and the Markdown pages, and
nitpicky mode makes every unresolved cross-reference a warning, so ``-W`` fails the
build on a broken reference. No intersphinx: the build runs offline, so references to
other projects' objects are not made (type hints are left out of signatures and
numpydoc's parameter types are not linked).
"""

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))

from stem_explorer import __version__  # noqa: E402

project = "stem_explorer"
author = "the stem_explorer developers"
copyright = "2026, the stem_explorer developers"
version = release = __version__

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "numpydoc",
    "formats_table",
    "xref_fallback",
]
exclude_patterns = ["_build", "**/.ipynb_checkpoints", "notebooks/*.h5"]
nitpicky = True

html_theme = "pydata_sphinx_theme"
html_title = f"stem_explorer {release}"
html_theme_options = {"navigation_with_keys": False}

autodoc_typehints = "none"
# an override without a docstring of its own is not listed again (the base class has it)
autodoc_inherit_docstrings = False
autodoc_default_options = {"members": True, "member-order": "bysource"}
numpydoc_show_class_members = False
numpydoc_xref_param_type = False
numpydoc_validation_checks = set()

myst_enable_extensions = ["colon_fence"]
myst_heading_anchors = 3

# the notebooks are committed without outputs: run them during the build, on a small
# sample (the explorer notebook reads STEM_EXPLORER_DATA; the kernels inherit it).
# STEM_EXPLORER_DOCS_EXECUTE=off renders notebooks as they are: the test suite builds
# from copies it has just executed (tests/test_docs_site.py)
nb_execution_mode = os.environ.get("STEM_EXPLORER_DOCS_EXECUTE", "force")
nb_execution_timeout = 300
nb_execution_raise_on_error = True
nb_execution_in_temp = True
if nb_execution_mode != "off" and "STEM_EXPLORER_DATA" not in os.environ:
    from stem_explorer.sample import ensure_sample

    os.environ["STEM_EXPLORER_DATA"] = str(ensure_sample(HERE / "_build" / "sample_data", (32, 32), (64, 64)))
