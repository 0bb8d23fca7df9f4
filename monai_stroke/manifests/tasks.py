"""Task definitions as data: which region categories are positive, which negative, and the task's window.

The built-in tasks live in ``monai_stroke/manifests/tasks.yaml`` (also reachable as ``data_manifests/tasks.yaml``).
A user file given to :func:`load_tasks` adds entries and overrides keys of existing ones, so a new task or a
window sweep (paper tables 2-3) is a YAML edit, never code::

    early_vs_intact_ww30:            # a new task
      description: early ischemic sign vs intact, wider window
      positives: [frank_hypodensity, territorial_infarction]
      negatives: [intact]
      window_center_hu: 40
      window_width_hu: 30
    old_vs_intact:                   # an override: only the keys given change
      window_width_hu: 40
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from importlib import resources
from typing import Any

import yaml

from monai_stroke.errors import UserInputError
from monai_stroke.vocabulary import CATEGORIES

__all__ = ["TaskDefinition", "load_tasks", "get_task", "BUILTIN_TASKS_FILE"]

#: The package's task file (a resource, so an installed package carries it).
BUILTIN_TASKS_FILE = "tasks.yaml"
_KEYS = ("description", "positives", "negatives", "window_center_hu", "window_width_hu")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class TaskDefinition:
    """A binary region-classification task.

    Args:
        name: the task's name (the key in the YAML file), e.g. ``early_vs_intact``.
        positives: region categories labelled 1.
        negatives: region categories labelled 0; categories in neither are not part of the task.
        window_center_hu: center of the task's intensity window, HU.
        window_width_hu: width of the window, HU (> 0).
        description: what the task is and where its numbers come from.
    """

    name: str
    positives: tuple[str, ...]
    negatives: tuple[str, ...]
    window_center_hu: float
    window_width_hu: float
    description: str = ""

    def __post_init__(self) -> None:
        where = f"task {self.name!r}"
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise UserInputError(f"task name {self.name!r} must start with a letter and use letters, digits, _ . -")
        for key in ("positives", "negatives"):
            values = getattr(self, key)
            if isinstance(values, str) or not values:
                raise UserInputError(f"{where}: {key} must be a non-empty list of categories")
            object.__setattr__(self, key, tuple(values))
            unknown = [c for c in values if c not in CATEGORIES]
            if unknown:
                raise UserInputError(
                    f"{where}: {key} has unknown categor{'y' if len(unknown) == 1 else 'ies'} "
                    f"{', '.join(map(repr, unknown))}; use {', '.join(CATEGORIES)}"
                )
            if len(set(values)) != len(values):
                raise UserInputError(f"{where}: {key} lists a category twice")
        both = sorted(set(self.positives) & set(self.negatives))
        if both:
            raise UserInputError(f"{where}: {', '.join(both)} is both positive and negative")
        for key in ("window_center_hu", "window_width_hu"):
            value = getattr(self, key)
            # bool is an int subclass; "true" as a window is certainly a slip
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise UserInputError(f"{where}: {key} must be a number, got {value!r}")
            object.__setattr__(self, key, float(value))
        if self.window_width_hu <= 0:
            raise UserInputError(f"{where}: window_width_hu must be > 0, got {self.window_width_hu:g}")
        if not isinstance(self.description, str):
            raise UserInputError(f"{where}: description must be text")

    @property
    def window_hu(self) -> tuple[float, float]:
        """The window's ``(low, high)`` HU bounds: ``WC -/+ WW/2``."""
        half = self.window_width_hu / 2
        return self.window_center_hu - half, self.window_center_hu + half

    @property
    def categories(self) -> tuple[str, ...]:
        """The categories that are part of the task (positives, then negatives)."""
        return self.positives + self.negatives

    def label_of(self, category: str) -> int | None:
        """1 for a positive category, 0 for a negative one, None for a category this task leaves out.

        Raises:
            ValueError: ``category`` is not one of the six region categories.
        """
        if category in self.positives:
            return 1
        if category in self.negatives:
            return 0
        if category not in CATEGORIES:
            raise ValueError(f"unknown region category {category!r}; expected one of {', '.join(CATEGORIES)}")
        return None

    def to_dict(self) -> dict[str, Any]:
        """Plain types (lists, floats), e.g. for a checkpoint's pre-processing contract."""
        out = asdict(self)
        out["positives"], out["negatives"] = list(self.positives), list(self.negatives)
        return out


def _read_yaml(text: str, source: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UserInputError(f"{source} is not valid YAML: {' '.join(str(exc).split())}") from None
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise UserInputError(f"{source} must map task names to entries with keys {', '.join(_KEYS)}")
    return data


def _merge(entries: dict[str, dict[str, Any]], updates: Mapping[str, Any], source: str) -> None:
    for name, entry in updates.items():
        unknown = sorted(set(entry) - set(_KEYS))
        if unknown:
            raise UserInputError(
                f"{source}: task {name!r} has unknown key {', '.join(unknown)}; use {', '.join(_KEYS)}"
            )
        merged = {**entries.get(str(name), {}), **entry}
        if str(name) in entries and "description" not in entry:
            # the built-in description states the paper's numbers; say which ones this file replaced
            changed = ", ".join(f"{k}={entry[k]}" for k in entry)
            merged["description"] = f"{merged.get('description', '')} [overridden by {source}: {changed}]".strip()
        missing = [k for k in _KEYS if k not in merged and k != "description"]
        if missing:
            raise UserInputError(f"{source}: new task {name!r} lacks {', '.join(missing)}")
        entries[str(name)] = merged


def load_tasks(path: str | os.PathLike | None = None) -> dict[str, TaskDefinition]:
    """The task definitions: the built-in ones, plus those of ``path``.

    Args:
        path: an optional YAML file whose entries add tasks or override keys of existing ones (a partial entry
            changes only the keys it gives, e.g. ``old_vs_intact: {window_width_hu: 40}``).

    Returns:
        name -> :class:`TaskDefinition`, built-in tasks first, in file order.

    Raises:
        UserInputError: the file is missing or malformed, or a task is invalid (unknown category, bad window).
    """
    builtin = resources.files("monai_stroke.manifests").joinpath(BUILTIN_TASKS_FILE).read_text(encoding="utf-8")
    entries: dict[str, dict[str, Any]] = {}
    _merge(entries, _read_yaml(builtin, f"monai_stroke/manifests/{BUILTIN_TASKS_FILE}"), BUILTIN_TASKS_FILE)
    if path is not None:
        source = os.fspath(path)
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except FileNotFoundError:
            raise UserInputError(f"task file {source} does not exist; check the path") from None
        except (IsADirectoryError, UnicodeDecodeError) as exc:
            raise UserInputError(f"task file {source} is not a YAML text file ({type(exc).__name__})") from None
        _merge(entries, _read_yaml(text, source), source)
    tasks = {}
    for name, entry in entries.items():
        try:
            tasks[name] = TaskDefinition(name=name, **entry)
        except UserInputError as exc:
            origin = source if path is not None else BUILTIN_TASKS_FILE
            raise UserInputError(f"{origin}: {exc}") from None
    return tasks


def get_task(task: str | TaskDefinition, path: str | os.PathLike | None = None) -> TaskDefinition:
    """One task by name (a :class:`TaskDefinition` passes through), e.g. for a bundle's ``task`` key.

    Args:
        task: the task's name, or a definition.
        path: an optional user task file, as for :func:`load_tasks`.

    Raises:
        UserInputError: no task has that name; the message lists the known ones.
    """
    if isinstance(task, TaskDefinition):
        return task
    tasks = load_tasks(path)
    if task not in tasks:
        raise UserInputError(
            f"unknown task {task!r}; known tasks: {', '.join(tasks)} (or add one to a tasks YAML file)"
        )
    return tasks[task]
