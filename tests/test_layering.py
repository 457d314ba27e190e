"""The import direction of DESIGN.md: widgets -> session -> analyses -> masks -> engine -> io.

Every import in the package, at module level or inside a function, is read from the
source (``ast``) and its target placed in a layer; nothing may import a higher layer.
``results.py`` is shared by the analyses and everything above them: it sits just below
``analyses`` and imports only the base modules, so the engine, masks and readers never
see it. The command line, the sample generator and the package's ``__init__`` sit on
top (they put the layers together).
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "stem_explorer"

#: Layers from top to bottom; a module belongs to the first layer one of whose
#: prefixes it starts with.
LAYERS = (
    ("application", ("stem_explorer.cli", "stem_explorer.cli_analyses", "stem_explorer.__main__", "stem_explorer.lab", "stem_explorer.lab_setup", "stem_explorer.bench",
                     "stem_explorer.browser_testing", "stem_explorer.sample", "stem_explorer.__init__")),
    ("widgets", ("stem_explorer.widgets",)),
    ("batch", ("stem_explorer.batch",)),
    ("session", ("stem_explorer.session", "stem_explorer.session_group")),
    ("analyses", ("stem_explorer.analyses",)),
    # the package's hook plugins write results' previews and event logs
    ("results", ("stem_explorer.results", "stem_explorer.results_export", "stem_explorer.hook_plugins")),
    ("masks", ("stem_explorer.masks",)),
    ("engine", ("stem_explorer.engine",)),
    # live sources sit beside the readers: a receiver feeds a live data set of io
    ("io", ("stem_explorer.io", "stem_explorer.live")),
    ("base", ("stem_explorer.errors", "stem_explorer._json", "stem_explorer._version", "stem_explorer._atomic",
              "stem_explorer._options")),
)
RANK = {name: i for i, (name, _) in enumerate(LAYERS)}

#: Upward imports that are known and owed a fix: (importing module, imported module).
KNOWN: set = set()


def layer_of(module: str) -> str:
    for name, prefixes in LAYERS:
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return name
    raise AssertionError(f"{module} is in no layer of tests/test_layering.py: add it to LAYERS")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    if parts[-1] == "__init__" and len(parts) > 1 and parts[:-1] != ("stem_explorer",):
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path, module: str = "") -> set:
    """Absolute names of the stem_explorer modules that ``path`` (the module called
    ``module``, by default its name in the package) imports, anywhere in it."""
    module = module or module_name(path)
    package = module.removesuffix(".__init__") if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            # "from .. import masks" imports the module masks, not the package above it
            for alias in node.names:
                name = f"{target}.{alias.name}"
                found.add(name if is_module(name) else target)
    return {name for name in found if name == "stem_explorer" or name.startswith("stem_explorer.")}


def is_module(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def existing_module(name: str) -> str:
    """``name`` cut back to a module or package of the source tree."""
    parts = name.split(".")
    while parts:
        candidate = PACKAGE.parent.joinpath(*parts)
        if candidate.with_suffix(".py").exists():
            return ".".join(parts)
        if (candidate / "__init__.py").exists():
            return ".".join(parts) if len(parts) > 1 else "stem_explorer.__init__"
        parts.pop()
    raise AssertionError(f"{name} is not in the source tree")


def upward_imports() -> set:
    found = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        here = module_name(path)
        for target in map(existing_module, imports_of(path)):
            if RANK[layer_of(target)] < RANK[layer_of(here)]:
                found.add((here, target))
    return found


def test_nothing_imports_a_higher_layer():
    assert upward_imports() - KNOWN == set()


def test_the_known_exceptions_are_still_there():
    """An exception that was fixed leaves the list (so it cannot come back unnoticed)."""
    assert KNOWN - upward_imports() == set()


def test_results_import_only_the_base_modules():
    targets = {existing_module(t) for t in imports_of(PACKAGE / "results.py")}
    # results_export (the NeXus view of a results file) is part of the results layer
    assert {layer_of(t) for t in targets} <= {"base", "results"}, targets


@pytest.mark.parametrize("source, target", [
    ("engine/warmup.py", "stem_explorer.analyses"),
    ("engine/warmup.py", "stem_explorer.masks"),
])
def test_the_engine_warm_up_imports_nothing_above_the_engine(source, target):
    assert not any(t == target or t.startswith(target + ".") for t in imports_of(PACKAGE / source))


def test_the_checker_sees_relative_and_lazy_imports(tmp_path):
    """The reader of imports finds the forms the package uses: a real module with an
    upward import added inside a function, read as if it were in the engine."""
    probe = tmp_path / "warmup.py"
    probe.write_text((PACKAGE / "engine" / "warmup.py").read_text() + "\n\ndef _late():\n    from ..analyses import base\n")
    found = {existing_module(t) for t in imports_of(probe, "stem_explorer.engine.warmup")}
    assert "stem_explorer.analyses.base" in found and "stem_explorer.io.memory" in found
    assert RANK[layer_of("stem_explorer.analyses.base")] < RANK[layer_of("stem_explorer.engine.warmup")]


@pytest.mark.parametrize("dtype", ["uint8", "uint16", ">u2", "float32"])
def test_the_engine_warm_up_covers_the_ops_the_common_analyses_plan(dtype):
    """The warm-up builds its plan from engine ops alone; it must still warm every op
    type and mask-product path that the common analyses plan on its frames."""
    import numpy as np

    from stem_explorer import masks
    from stem_explorer.analyses import CenterOfMass, RadialProfile, StdFrame, SumFrame, VirtualDetector, build_plan
    from stem_explorer.engine import warmup
    from stem_explorer.io import open_dataset

    def kinds(plan):
        return {(type(op).__name__, getattr(op, "kernel", None)) for op in plan.ops}

    ds = open_dataset(np.zeros((4, 4, 8, 8), dtype))
    weights = masks.Weighted(np.linspace(0, 1, 64).reshape(8, 8))
    analyses = [
        VirtualDetector({"disk": masks.Disk(4, 4, 2), "weighted": weights}),
        RadialProfile(center=(4, 4), n_bins=3),
        CenterOfMass(center=(4, 4)),
        SumFrame(),
        StdFrame(),
    ]
    assert kinds(build_plan(analyses, ds)[0]) <= kinds(warmup.warm_up_plan(np.dtype(dtype)))
