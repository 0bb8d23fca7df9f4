"""Task definitions are data: the built-in YAML, user files that add or override entries, validation."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from monai_stroke.errors import UserInputError
from monai_stroke.manifests import TaskDefinition, get_task, load_tasks
from monai_stroke.vocabulary import CATEGORIES

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "name, positives, negatives, window",
    [
        ("early_vs_intact", {"frank_hypodensity", "territorial_infarction"}, {"intact"}, (40.0, 20.0)),
        ("old_vs_intact", {"old_infarction"}, {"intact"}, (40.0, 30.0)),
    ],
)
def test_builtin_tasks_are_the_papers(name: str, positives: set, negatives: set, window: tuple) -> None:
    task = load_tasks()[name]
    assert (set(task.positives), set(task.negatives)) == (positives, negatives)
    assert (task.window_center_hu, task.window_width_hu) == window
    assert "Jung & Whangbo" in task.description
    labels = {c: task.label_of(c) for c in CATEGORIES}
    assert labels == {c: 1 if c in positives else 0 if c in negatives else None for c in CATEGORIES}


def test_label_of_rejects_unknown_category() -> None:
    with pytest.raises(ValueError, match="unknown region category 'infarct'"):
        load_tasks()["old_vs_intact"].label_of("infarct")


def test_window_bounds_and_plain_dict() -> None:
    task = load_tasks()["early_vs_intact"]
    assert task.window_hu == (30.0, 50.0)
    d = task.to_dict()
    assert d["positives"] == ["frank_hypodensity", "territorial_infarction"] and d["window_width_hu"] == 20.0
    assert TaskDefinition(**d) == task


def test_data_manifests_tasks_yaml_is_a_relative_link_to_the_package_file() -> None:
    link = REPO / "data_manifests" / "tasks.yaml"
    assert link.is_symlink() and not os.path.isabs(os.readlink(link))
    assert link.resolve() == (REPO / "monai_stroke" / "manifests" / "tasks.yaml").resolve()


def test_a_new_task_is_a_yaml_entry(tmp_path: Path) -> None:
    user = tmp_path / "tasks.yaml"
    user.write_text(
        "hemorrhage_free_recent:\n"
        "  positives: [recent_infarction, scattered_infarction]\n"
        "  negatives: [intact, old_infarction]\n"
        "  window_center_hu: 35\n"
        "  window_width_hu: 25\n"
        "old_vs_intact:\n"
        "  window_width_hu: 40\n"
    )
    tasks = load_tasks(user)
    assert list(tasks) == ["early_vs_intact", "old_vs_intact", "hemorrhage_free_recent"]
    new = tasks["hemorrhage_free_recent"]
    assert (
        new.label_of("scattered_infarction"),
        new.label_of("old_infarction"),
        new.label_of("frank_hypodensity"),
    ) == (
        1,
        0,
        None,
    )
    assert new.window_hu == (22.5, 47.5)
    # an override changes only the keys given, and says so in the description
    old = tasks["old_vs_intact"]
    assert (old.positives, old.window_center_hu, old.window_width_hu) == (("old_infarction",), 40.0, 40.0)
    assert f"overridden by {user}: window_width_hu=40" in old.description
    assert load_tasks()["old_vs_intact"].window_width_hu == 30.0  # the built-in file is untouched
    assert get_task("hemorrhage_free_recent", user) == new


def test_example_user_task_file_loads() -> None:
    tasks = load_tasks(REPO / "data_manifests" / "examples" / "tasks_extra.yaml")
    assert tasks["any_recent_vs_intact"].label_of("recent_infarction") == 1
    assert tasks["old_vs_intact"].window_width_hu == 40.0


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "t:\n  positives: [infarct]\n  negatives: [intact]\n  window_center_hu: 40\n  window_width_hu: 20\n",
            "unknown category 'infarct'",
        ),
        (
            "t:\n  positives: [intact]\n  negatives: [intact]\n  window_center_hu: 40\n  window_width_hu: 20\n",
            "intact is both positive and negative",
        ),
        (
            "t:\n  positives: []\n  negatives: [intact]\n  window_center_hu: 40\n  window_width_hu: 20\n",
            "positives must be a non-empty list",
        ),
        (
            "t:\n  positives: old_infarction\n  negatives: [intact]\n  window_center_hu: 40\n  window_width_hu: 20\n",
            "positives must be a non-empty list",
        ),
        (
            "t:\n  positives: [old_infarction]\n  negatives: [intact]\n  window_center_hu: 40\n  window_width_hu: 0\n",
            "window_width_hu must be > 0",
        ),
        (
            "t:\n  positives: [old_infarction]\n  negatives: [intact]\n  window_center_hu: forty\n  window_width_hu: 20\n",
            "window_center_hu must be a number",
        ),
        (
            "t:\n  positives: [old_infarction]\n  negatives: [intact]\n  window_center_hu: 40\n",
            "new task 't' lacks window_width_hu",
        ),
        ("old_vs_intact:\n  window_centre_hu: 45\n", "unknown key window_centre_hu"),
        ("t: [1, 2]\n", "must map task names to entries"),
        ("t:\n  positives: [a\n", "is not valid YAML"),
    ],
)
def test_invalid_task_file_is_a_user_error(tmp_path: Path, text: str, expected: str) -> None:
    user = tmp_path / "bad.yaml"
    user.write_text(text)
    with pytest.raises(UserInputError) as err:
        load_tasks(user)
    assert expected in str(err.value) and str(user) in str(err.value)


def test_missing_task_file_and_unknown_task(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="does not exist"):
        load_tasks(tmp_path / "nope.yaml")
    with pytest.raises(UserInputError, match="unknown task 'early'; known tasks: early_vs_intact, old_vs_intact"):
        get_task("early")
