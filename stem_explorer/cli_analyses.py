"""The command line's analysis options, generated from the registry of analyses.

``stem-explorer run PATH -a NAME --param value ...``: every parameter declared by a
registered analysis (third-party ones included) is an option named after it
(``scan_rotation`` -> ``--scan-rotation``, plus the aliases it declares), parsed by
its declaration; an option applies to every chosen analysis that has the parameter.
Detector masks also come from the shorthands ``--disk``, ``--ring``, ``--rect`` and
``--mask-json``, which fill the mask parameter of each chosen analysis that has one
and was not given it otherwise. ``--recipe FILE`` adds the analyses of a JSON recipe.
A parameter whose option name is taken by another option of ``run`` is set through a
recipe.
"""

from __future__ import annotations

import argparse
import json

from . import masks
from .analyses import REGISTRY, load_recipe
from .analyses.params import json_words
from .errors import AnalysisError

#: The shorthand options of detector masks, and how each builds its mask.
SHORTHANDS = {
    "disk": (("CY", "CX", "R"), masks.Disk),
    "ring": (("CY", "CX", "RI", "RO"), masks.Ring),
    "rect": (("Y0", "X0", "H", "W"), masks.Rectangle),
}
MASK_PARAMS = ("mask", "masks")
_DEST = "analysis_param:"


def option_name(param) -> str:
    """The command-line option (without ``--``) of a declared parameter; its
    ``cli_aliases`` are further names of the same option."""
    return param.name.replace("_", "-")


def add_analysis_options(parser: argparse.ArgumentParser, registry=REGISTRY) -> None:
    """Add ``--analysis``, ``--recipe``, the mask shorthands and one option per
    parameter name of the registered analyses to the ``run`` parser."""
    names = ", ".join(f"{cls.label} ({cls.__name__})" for cls in registry.classes())
    parser.add_argument("--analysis", "-a", action="append", metavar="NAME",
                        help=f"analysis to run (repeat for several; one pass serves all): {names}. "
                             "Default: sum, unless --recipe is given")
    parser.add_argument("--recipe", action="append", metavar="FILE",
                        help="JSON file listing analysis descriptions, as in a results file's provenance")
    masks_group = parser.add_argument_group("detector masks", "shorthands for the mask parameter of the chosen analyses")
    for name, (metavar, _) in SHORTHANDS.items():
        masks_group.add_argument(f"--{name}", type=float, nargs=len(metavar), action="append", metavar=metavar)
    masks_group.add_argument("--mask-json", action="append", help="mask description (JSON text or file)")
    group = parser.add_argument_group(
        "analysis parameters", "each applies to every chosen analysis with that parameter (`stem-explorer analyses`)"
    )
    for option, owners in _options(registry).items():
        if f"--{option}" in parser._option_string_actions:
            continue  # taken by run itself (or a mask shorthand): the parameter is set otherwise
        aliases = {f"--{a}" for _, p in owners for a in p.cli_aliases} - set(parser._option_string_actions)
        group.add_argument(
            f"--{option}", *sorted(aliases), dest=_DEST + option, nargs="*", action="append",
            metavar=owners[0][1].cli_metavar(),
            help="; ".join(f"{cls.label}: {p.help} ({p.describe()})" for cls, p in owners).replace("%", "%%"),
        )


def _options(registry) -> dict:
    """Option name -> [(analysis class, parameter)] over the registered analyses."""
    options: dict = {}
    for cls in registry.classes():
        for param in cls.parameters():
            options.setdefault(option_name(param), []).append((cls, param))
    return options


def analyses_from_args(args, registry=REGISTRY) -> list:
    """The analyses asked for by ``--recipe``, ``--analysis`` and their options."""
    chosen = [a for path in args.recipe or [] for a in load_recipe(path)]
    given = {k[len(_DEST):]: v for k, v in vars(args).items() if k.startswith(_DEST) and v is not None}
    pool, pool_options = _shorthand_masks(args)
    used, pool_used = set(), False
    for name in args.analysis or ([] if chosen else ["sum"]):
        cls = registry.get(name)
        values = {}
        for param in cls.parameters():
            option = option_name(param)
            if option in given:
                values[param.name] = param.parse_cli(given[option], f"--{option}")
                used.add(option)
            elif param.kind in MASK_PARAMS and pool:
                values[param.name] = _from_pool(cls, param, pool, pool_options)
                pool_used = True
            elif param.required:
                raise AnalysisError(_missing(name, cls, param))
        try:
            chosen.append(cls(**values))
        except AnalysisError as exc:
            raise AnalysisError(f"--analysis {name}: {exc}") from None
    unused = sorted(set(given) - used)
    labels = ", ".join(args.analysis or ["sum"])
    if unused:
        raise AnalysisError(f"--{unused[0]} is a parameter of none of the chosen analyses ({labels}); see `stem-explorer analyses`")
    if pool and not pool_used:
        raise AnalysisError(f"{', '.join(pool_options)} given, but none of the chosen analyses ({labels}) takes detector masks")
    return chosen


def _missing(name: str, cls, param) -> str:
    if param.kind in MASK_PARAMS:
        return (f"--analysis {name} needs at least one mask for {cls.__name__} {param.name}: --disk CY CX R, "
                f"--ring CY CX RI RO, --rect Y0 X0 H W or --mask-json")
    return f"--analysis {name} needs --{option_name(param)} {param.cli_metavar()}: {param.describe()}"


def _shorthand_masks(args) -> tuple[list, list]:
    """The masks of ``--disk``, ``--ring``, ``--rect`` and ``--mask-json``, in that
    order, and the options that gave them."""
    found, options = [], []
    for name, (_, build) in SHORTHANDS.items():
        for numbers in getattr(args, name, None) or []:
            found.append(build(*numbers))
            options.append(f"--{name}")
    for text in getattr(args, "mask_json", None) or []:
        description = json_words([text], "--mask-json")
        for d in description if isinstance(description, list) else [description]:
            found.append(masks.from_dict(d))
            options.append("--mask-json")
    return found, options


def _from_pool(cls, param, pool: list, options: list):
    if param.kind == "masks":
        return list(pool)
    if len(pool) != 1:
        raise AnalysisError(
            f"{cls.__name__} {param.name} is one mask, but {len(pool)} were given ({', '.join(options)}); "
            f"give one, or run {cls.label} on its own"
        )
    return pool[0]


# -- `stem-explorer analyses` ----------------------------------------------------------------
def describe_analyses(registry=REGISTRY, names=None, as_json: bool = False) -> str:
    """The text of ``stem-explorer analyses``: every analysis with its parameters, or
    (``as_json``) their JSON Schemas keyed by name."""
    classes = [registry.get(n) for n in names] if names else registry.classes()
    if as_json:
        return json.dumps({cls.__name__: cls.schema() for cls in classes}, indent=2)
    lines = []
    for cls in classes:
        summary = " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split())
        lines.append(f"{cls.__name__} ({cls.label}): {summary}")
        lines.append(f"    from {registry.origin(cls.__name__)}; results over the {cls.result_space}")
        for param in cls.parameters():
            default = "required" if param.required else f"default {param.to_json(param.default)!r}"
            described = param.describe()
            lines.append(f"  {param.name}: {_options_of(param)}")
            lines.append(f"      {param.help} {described[0].upper() + described[1:]}; {default}.")
        lines.append("")
    return "\n".join(lines)


def _options_of(param) -> str:
    names = [f"--{n}" for n in [option_name(param), *param.cli_aliases] if n not in SHORTHANDS]
    text = " or ".join(f"{n} {param.cli_metavar()}" for n in names)
    if param.kind in MASK_PARAMS:
        shorthands = "--disk, --ring, --rect or --mask-json"
        return f"{shorthands}, or {text}" if text else shorthands
    return text
