"""Transform chains written once, as MONAI-config fragments, and shared by every bundle.

A fragment is a YAML file in the top-level ``transforms/`` folder (installed as the package
``monai_stroke.chains``, so a bundle folder copied elsewhere still finds it once monai-stroke is installed)::

    description: what the chain is for
    params:                      # defaults; every one can be overridden by load_chain(**params)
      image_key: image
      windows: hemorrhage
    parts:                       # named pieces a bundle combines: e.g. preprocess (deterministic, cacheable),
      preprocess:                # augment (training only), finalize (window, concatenation, ensure type)
        - _target_: monai_stroke.io.LoadCTSeriesd
          keys: "@image_key"

Inside a part, ``@name`` refers to a parameter and ``$`` starts an expression, exactly as in a bundle config
(``monai_stroke`` is importable in expressions, like ``monai``, ``torch`` and ``np``).
Training, evaluation and inference all call :func:`load_chain` on the same fragment, so their pre-processing
cannot drift apart; a checkpoint's :class:`~monai_stroke.contract.Contract` records the chain name and params.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.resources
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from monai.bundle import ConfigParser
from monai.transforms import Compose

from monai_stroke.errors import UserInputError

__all__ = ["available_chains", "chain_path", "read_chain", "load_chain", "chain_params", "chain_identity"]

_PACKAGE = "monai_stroke.chains"
# modules an expression may use besides MONAI's defaults (monai, torch, np)
_GLOBALS = {"monai_stroke": "monai_stroke"}
_REFERENCE = re.compile(r"@([A-Za-z_][A-Za-z0-9_]*)")
_DOTTED = re.compile(r"\bmonai_stroke(?:\.[A-Za-z_][A-Za-z0-9_]*)+")


def _import_submodules(config: Any) -> None:
    """Import the ``monai_stroke`` submodules that ``$`` expressions name (``import monai_stroke`` alone does not)."""
    for dotted in set(_DOTTED.findall(json.dumps(config, default=str))):
        parts = dotted.split(".")
        for end in range(len(parts), 1, -1):
            try:
                importlib.import_module(".".join(parts[:end]))
                break
            except ImportError:
                continue


def available_chains() -> list[str]:
    """Names of the chain fragments that ship with monai-stroke."""
    root = importlib.resources.files(_PACKAGE)
    return sorted(p.name[: -len(".yaml")] for p in root.iterdir() if p.name.endswith(".yaml"))


def chain_path(name: str | os.PathLike) -> Path:
    """Path of a chain fragment: a shipped chain's name, or a path to a user's own YAML fragment."""
    candidate = Path(name)
    if candidate.suffix in (".yaml", ".yml") and candidate.is_file():
        return candidate
    resource = importlib.resources.files(_PACKAGE) / f"{name}.yaml"
    if not resource.is_file():
        raise UserInputError(
            f"unknown transform chain {str(name)!r}; shipped chains: {', '.join(available_chains())}, "
            "or give the path of a YAML fragment"
        )
    return Path(str(resource))


def read_chain(name: str | os.PathLike) -> dict[str, Any]:
    """The parsed fragment (``description``, ``params``, ``parts``), validated."""
    path = chain_path(name)
    with open(path) as f:
        content = yaml.safe_load(f) or {}
    if not isinstance(content.get("parts"), dict) or not content["parts"]:
        raise UserInputError(f"transform chain {path} has no 'parts' mapping; see transforms/README.md")
    content.setdefault("params", {})
    return content


def chain_params(name: str | os.PathLike, **overrides: Any) -> dict[str, Any]:
    """The chain's parameters after overrides: what a checkpoint's contract records."""
    content = read_chain(name)
    unknown = set(overrides) - set(content["params"])
    if unknown:
        raise UserInputError(
            f"transform chain {str(name)!r} has no parameter(s) {', '.join(sorted(unknown))}; "
            f"its parameters are {', '.join(sorted(content['params']))}"
        )
    return {**content["params"], **overrides}


def load_chain(name: str | os.PathLike, part: str | Sequence[str], **params: Any) -> Compose:
    """Instantiate one or more parts of a chain fragment as a MONAI ``Compose``.

    Args:
        name: a shipped chain (see :func:`available_chains`) or the path of a YAML fragment.
        part: a part name, or several to concatenate in order (e.g. ``["preprocess", "finalize"]``).
        params: overrides of the fragment's ``params``; an unknown name is an error, so a typo cannot be
            silently ignored.
    """
    content = read_chain(name)
    values = chain_params(name, **params)
    parts = [part] if isinstance(part, str) else list(part)
    missing = [p for p in parts if p not in content["parts"]]
    if missing:
        raise UserInputError(
            f"transform chain {str(name)!r} has no part(s) {', '.join(missing)}; "
            f"its parts are {', '.join(content['parts'])}"
        )
    transforms: list[Any] = []
    for p in parts:
        _import_submodules(content["parts"][p])
        parser = ConfigParser({**values, "_chain": content["parts"][p] or []}, globals=_GLOBALS)
        built = parser.get_parsed_content("_chain", instantiate=True)
        transforms.extend(t for t in built if t is not None)
    return Compose(transforms)


def chain_identity(name: str | os.PathLike, part: str | Sequence[str], **params: Any) -> str:
    """A SHA-256 of what the given part(s) compute: their config and the values of the parameters they use.

    Parameters the parts do not reference do not change it, so a persistent cache of a task-independent
    ``preprocess`` part keyed by this value is shared by every task (MONAI's ``PersistentDataset`` keys its
    files by the input item only, so a cache folder must be keyed by the transforms, e.g.
    ``cache_dir / chain_identity(...)``). The monai-stroke version is included: code changes invalidate it.

    Args:
        name: a shipped chain or the path of a YAML fragment.
        part: a part name or several, as for :func:`load_chain`.
        params: overrides of the fragment's ``params``.
    """
    from monai_stroke import __version__

    content = read_chain(name)
    values = chain_params(name, **params)
    parts = [part] if isinstance(part, str) else list(part)
    missing = [p for p in parts if p not in content["parts"]]
    if missing:
        raise UserInputError(f"transform chain {str(name)!r} has no part(s) {', '.join(missing)}")
    config = [content["parts"][p] for p in parts]
    text = json.dumps(config, sort_keys=True, default=str)
    used = {key: values[key] for key in sorted(set(_REFERENCE.findall(text))) if key in values}
    payload = json.dumps({"version": __version__, "parts": config, "params": used}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()
