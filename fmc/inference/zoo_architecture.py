"""The architecture of a BioImage Model Zoo package: fmc's own network code as one Python file.

The zoo rebuilds ``pytorch_state_dict`` weights by importing one file on its own (no fmc
installed, no sibling files), so :func:`architecture_source` writes the modules that define the
network whole, one after the other, each less its imports of fmc: the module before it defines
what they named (checked when the file is written). Its callable is
:class:`fmc.inference.tile_function.FmcZooNetwork`; it needs torch, and MONAI for MONAI networks
(:func:`environment_text`).
"""

from __future__ import annotations

import ast
import inspect

import torch

from fmc.core import errors, named_choices
from fmc.core.errors import FmcConfigError
from fmc.inference import tile_function
from fmc.inference.model_card import distance_scales
from fmc.models import networks, unet3d
from fmc.models.module import confidence_blend

ARCHITECTURE_FILE = "fmc_network.py"
ARCHITECTURE_CALLABLE = tile_function.FmcZooNetwork.__name__
# In the order of the file: each defines what the later ones import from fmc.
ARCHITECTURE_PARTS = (errors, named_choices, unet3d, networks, confidence_blend, tile_function)
ARCHITECTURE_HEADER = '''"""fmc's network for the BioImage Model Zoo, written by python -m fmc.export from

{parts}
"""

from __future__ import annotations
'''


def _is_fmc(module: str | None) -> bool:
    return module is not None and module.split(".")[0] == "fmc"


def _defined_names(tree: ast.Module) -> set[str]:
    """The names a module's top-level statements define (functions, classes, assignments)."""
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names


def without_fmc_imports(source: str) -> tuple[str, set[str]]:
    """``source`` less its ``from __future__`` and fmc imports (their whole lines), and the names
    those fmc imports bring.

    Raises
    ------
    RuntimeError
        For an fmc import this cannot remove (``import fmc...``, or one inside a function).
    """
    tree = ast.parse(source)
    top_level = set(map(id, tree.body))
    dropped, names = set(), set()
    for node in ast.walk(tree):
        fmc_import = (isinstance(node, ast.ImportFrom) and node.level == 0
                      and (_is_fmc(node.module) or node.module == "__future__"))
        if (isinstance(node, ast.Import) and any(_is_fmc(alias.name) for alias in node.names)
                or (fmc_import and id(node) not in top_level)):
            raise RuntimeError(f"line {node.lineno}: the zoo's architecture file can only drop "
                               "top-level 'from fmc... import' lines")
        if fmc_import:
            dropped.update(range(node.lineno - 1, node.end_lineno))
            if node.module != "__future__":
                names.update(alias.asname or alias.name for alias in node.names)
    lines = source.splitlines(keepends=True)
    return "".join(line for number, line in enumerate(lines) if number not in dropped), names


def architecture_source() -> str:
    """The package's architecture file: the sources of :data:`ARCHITECTURE_PARTS` in order, each
    less its fmc imports, under one ``from __future__ import annotations``.

    Raises
    ------
    RuntimeError
        If a part imports from fmc a name that no part before it defines.
    """
    defined: set[str] = set()
    texts = []
    for part in ARCHITECTURE_PARTS:
        text, needed = without_fmc_imports(inspect.getsource(part))
        if needed - defined:
            raise RuntimeError(f"{part.__name__} needs {', '.join(sorted(needed - defined))} "
                               "from fmc, which no part of the architecture file before it defines")
        defined |= _defined_names(ast.parse(text))
        texts.append(text)
    names = "\n".join(f"- {part.__module__}.{part.__name__}" if inspect.isfunction(part)
                      else f"- {part.__name__}" for part in ARCHITECTURE_PARTS)
    return ARCHITECTURE_HEADER.format(parts=names) + "\n\n" + "\n\n\n".join(texts)


def check_packable(module) -> None:
    """Refuse, in one line, a network whose code the architecture file cannot carry: one
    registered from outside fmc (an entry point of group ``fmc.networks``)."""
    name = str(module.hparams.get("network", "unet3d"))
    origin = networks.NETWORKS.origin(name)
    if origin != "fmc":
        raise FmcConfigError(f"format=bioimageio: network {name} comes from outside fmc "
                             f"({origin}); its code cannot go into the package's architecture "
                             "file: export format=torchscript or format=onnx instead")


def architecture_kwargs(module) -> dict:
    """The keyword arguments of :data:`ARCHITECTURE_CALLABLE` for ``module``'s network."""
    hp = module.hparams
    extra = dict(hp.get("network_kwargs") or {})
    return {"network": {"network": str(hp.get("network", "unet3d")),
                        **({"network_kwargs": extra} if extra else {}),
                        "in_channels": len(hp.channels),
                        "out_channels": int(hp.get("out_channels", 1))
                        + (hp.get("confidence") == "head"),
                        "features": int(hp.features), "depth": int(hp.depth),
                        "norm": str(hp.norm), "negative_slope": float(hp.negative_slope),
                        "out_activation": str(hp.out_activation), "residual": bool(hp.residual)},
            "confidence": hp.get("confidence", "none") == "head",
            "scales": distance_scales(module)}


def environment_text(model) -> str:
    """The conda environment of the state-dict weights: python, torch and, for MONAI networks,
    MONAI (pip names and the versions that wrote the package)."""
    pip = [f"torch=={torch.__version__.split('+')[0]}"]
    if model.hparams.get("network", "unet3d") != "unet3d":
        import monai

        pip.append(f"monai=={monai.__version__}")
    return "\n".join(["name: fmc-zoo-model", "channels:", "  - conda-forge", "  - nodefaults",
                      "dependencies:", "  - python>=3.10", "  - pip", "  - pip:",
                      *(f"    - {name}" for name in pip), ""])
