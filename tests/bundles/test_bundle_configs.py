"""Every bundle file parses, every target imports, the documented keys exist, and the networks match the metadata."""

from __future__ import annotations

import configparser
import json
import pydoc
import re
from pathlib import Path

import pytest
import yaml
from monai.bundle import ConfigParser, verify_net_in_out
from monai.bundle.config_item import ComponentLocator

ROOT = Path(__file__).parents[2]
BUNDLES = ("hemorrhage_classification", "ischemic_classification")
CONFIGS = ("train.yaml", "evaluate.yaml", "inference.yaml", "multi_gpu_train.yaml")
USER_KEYS = (
    "bundle_root",
    "dataset_dir",
    "output_dir",
    "device",
    "max_epochs",
    "network_size",
    "batch_size",
    "learning_rate",
    "num_workers",
    "pretrained_weights",
    "seed",
)
_DOTTED = re.compile(r"\bmonai_stroke(?:\.[A-Za-z_][A-Za-z0-9_]*)+")


def _walk(node, found):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "_target_":
                found["targets"].add(value)
            _walk(value, found)
    elif isinstance(node, list):
        for value in node:
            _walk(value, found)
    elif isinstance(node, str) and node.startswith("$"):
        found["expressions"].update(_DOTTED.findall(node))
    return found


@pytest.mark.parametrize("bundle", BUNDLES)
def test_model_zoo_layout(bundle) -> None:
    root = ROOT / "bundles" / bundle
    for name in (*CONFIGS, "metadata.json", "logging.conf"):
        assert (root / "configs" / name).is_file(), name
    assert (root / "docs" / "README.md").is_file() and (root / "LICENSE").is_file()


@pytest.mark.parametrize("bundle", BUNDLES)
@pytest.mark.parametrize("config", CONFIGS)
def test_every_target_and_expression_resolves(bundle, config) -> None:
    content = yaml.safe_load((ROOT / "bundles" / bundle / "configs" / config).read_text())
    found = _walk(content, {"targets": set(), "expressions": set()})
    locator = ComponentLocator()
    for target in found["targets"]:
        resolved = pydoc.locate(target) if "." in target else locator.get_component_module_name(target)
        assert resolved, f"{config}: _target_ {target} does not resolve"
    for dotted in found["expressions"]:
        assert pydoc.locate(dotted) is not None, f"{config}: {dotted} does not exist"


@pytest.mark.parametrize("bundle", BUNDLES)
def test_metadata_and_logging_parse(bundle) -> None:
    configs = ROOT / "bundles" / bundle / "configs"
    meta = json.loads((configs / "metadata.json").read_text())
    for key in ("version", "changelog", "monai_version", "pytorch_version", "numpy_version", "task", "description"):
        assert meta[key], key
    assert meta["version"] in meta["changelog"]
    assert meta["required_packages_version"]["monai-stroke"]
    assert any("Jung" in r for r in meta["references"])
    inputs = meta["network_data_format"]["inputs"]["image"]
    assert len(inputs["channel_def"]) == inputs["num_channels"]
    assert "HU" in json.dumps(inputs["channel_def"])
    logging_conf = configparser.ConfigParser()
    logging_conf.read(configs / "logging.conf")
    assert "logger_monai_stroke" in logging_conf


@pytest.mark.parametrize("bundle", BUNDLES)
def test_user_keys_and_metadata_channels(bundle) -> None:
    configs = ROOT / "bundles" / bundle / "configs"
    parser = ConfigParser()
    parser.read_config(str(configs / "train.yaml"))
    parser.read_meta(str(configs / "metadata.json"))
    for key in (*USER_KEYS, *(("task",) if bundle.startswith("ischemic") else ())):
        assert key in parser, key
    for key in ("initialize", "run", "finalize"):
        assert isinstance(parser[key], list)
    meta = parser["_meta_"]["network_data_format"]
    assert parser.get_parsed_content("in_channels") == meta["inputs"]["image"]["num_channels"]
    assert parser["network_def"]["num_outputs"] == meta["outputs"]["pred"]["num_channels"]


@pytest.mark.parametrize("bundle", BUNDLES)
def test_multi_gpu_file_only_overrides(bundle) -> None:
    configs = ROOT / "bundles" / bundle / "configs"
    parser = ConfigParser()
    parser.read_config(str(configs / "train.yaml"))
    overrides = yaml.safe_load((configs / "multi_gpu_train.yaml").read_text())
    for key in overrides:
        parent = key.rsplit("#", 1)[0] if "#" in key else key
        assert key in parser or (key.endswith("sampler") and parent in parser), f"{key} is not an override"
    merged = ConfigParser()
    merged.read_config([str(configs / "train.yaml"), str(configs / "multi_gpu_train.yaml")])
    assert merged["train"]["dataloader"]["sampler"] == "@train#sampler"


@pytest.mark.parametrize(
    "bundle, size", [("hemorrhage_classification", "tiny"), ("hemorrhage_classification", "full"),
                     ("ischemic_classification", "tiny")]
)
def test_verify_net_in_out(bundle, size) -> None:
    configs = ROOT / "bundles" / bundle / "configs"
    # the function behind `python -m monai.bundle verify_net_in_out`; raises on a shape or dtype mismatch
    verify_net_in_out(
        net_id="network_def",
        meta_file=str(configs / "metadata.json"),
        config_file=str(configs / "inference.yaml"),
        device="cpu",
        network_size=size,
    )


def test_verify_net_in_out_catches_a_wrong_channel_count() -> None:
    configs = ROOT / "bundles" / "hemorrhage_classification" / "configs"
    with pytest.raises(Exception, match="channel"):
        verify_net_in_out(
            net_id="network_def",
            meta_file=str(configs / "metadata.json"),
            config_file=str(configs / "inference.yaml"),
            device="cpu",
            network_size="tiny",
            **{"_meta_#network_data_format#outputs#pred#num_channels": 5},
        )
