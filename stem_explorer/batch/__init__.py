"""Many inputs, one recipe: a results file per input and a summary, resumable.

:func:`batch` (and ``stem-explorer batch INPUT... --recipe RECIPE.json -o OUT_DIR``)
runs the analyses of a recipe on files, folders and glob patterns, several inputs at
once on one cluster, and writes ``<name>.results.h5`` per input plus
``summary.csv`` / ``summary.json``. A re-run keeps the results that are complete and
up to date; ``watch=True`` goes on with the files that land in the input folders.
See docs/batch.md.
"""

from .inputs import RESULTS_SUFFIX, BatchInput
from .progress import BarProgress, ProgressView, WidgetProgress
from .recipe import RECIPE_SCHEMA, BatchRecipe, load_batch_recipe
from .run import BatchReport, batch
from .summary import COLUMNS

__all__ = [
    "COLUMNS",
    "RECIPE_SCHEMA",
    "RESULTS_SUFFIX",
    "BarProgress",
    "BatchInput",
    "BatchRecipe",
    "BatchReport",
    "ProgressView",
    "WidgetProgress",
    "batch",
    "load_batch_recipe",
]
