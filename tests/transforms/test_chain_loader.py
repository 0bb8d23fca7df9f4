from __future__ import annotations

import pytest
import torch

from monai_stroke.errors import UserInputError
from monai_stroke.transforms.chains import chain_params, load_chain

FRAGMENT = """
description: a two-part test chain
params:
  image_key: image
  size: [4, 4]
  offset: 0
parts:
  resize:
    - _target_: Resized
      keys: "@image_key"
      spatial_size: "$@size + [-1]"
  shift:
    - _target_: Lambdad
      keys: "@image_key"
      func: "$lambda x: x + @offset"
"""


@pytest.fixture()
def fragment(tmp_path):
    path = tmp_path / "toy.yaml"
    path.write_text(FRAGMENT)
    return path


def test_parts_concatenate_in_order_and_params_flow_through(fragment) -> None:
    chain = load_chain(fragment, ["resize", "shift"], size=[2, 2], offset=5)
    out = chain({"image": torch.zeros(1, 4, 4, 3)})["image"]
    assert tuple(out.shape) == (1, 2, 2, 3)
    assert torch.all(out == 5)


def test_params_record_defaults_and_overrides(fragment) -> None:
    assert chain_params(fragment, offset=2) == {"image_key": "image", "size": [4, 4], "offset": 2}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"part": "resize", "ofset": 1}, "no parameter"),
        ({"part": "crop"}, "no part"),
    ],
)
def test_typos_are_errors_not_silently_ignored(fragment, kwargs, message) -> None:
    with pytest.raises(UserInputError, match=message):
        load_chain(fragment, **kwargs)


def test_unknown_chain_lists_the_shipped_ones() -> None:
    with pytest.raises(UserInputError, match="unknown transform chain 'nope'"):
        load_chain("nope", "preprocess")
