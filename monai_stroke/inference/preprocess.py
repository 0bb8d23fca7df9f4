"""Run the shared transform chains exactly as each model's contract says, without doing any step twice.

Every network of the cascade is pre-processed by its own contract: the chain fragment it was trained with
(``transforms/<chain>.yaml``) and the chain parameters it recorded. The hemorrhage chain and the ischemic chains
all begin by ingesting the same series, and the two ischemic chains normally share registration and region
crops too. :class:`ChainRunner` runs a part of a chain one transform at a time and remembers the output of every
*prefix* under a key made of the input and the configurations of the transforms so far (with the parameter
values they use), so a step whose configuration and input are identical is computed once and shared, and a
step that differs (another crop size, another registration setting) runs on its own. It also times every step
into the cascade's stages (``ingest``, ``registration``, ``region_crops``, ...).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections import Counter, defaultdict
from collections.abc import Mapping
from typing import Any

from monai.transforms import Compose
from monai.transforms.transform import apply_transform

from monai_stroke.contract import Contract
from monai_stroke.errors import find_user_error
from monai_stroke.transforms.chains import chain_params, load_chain, read_chain

__all__ = ["STAGE_OF_TRANSFORM", "StageTimer", "ChainRunner"]

#: transform class -> cascade stage its time is booked to (others go to the caller's stage)
STAGE_OF_TRANSFORM: dict[str, str] = {
    "LoadCTSeriesd": "ingest",
    "RegisterToTemplated": "registration",
    "RegionCropd": "region_crops",
}
_REFERENCE = re.compile(r"@([A-Za-z_][A-Za-z0-9_]*)")


class StageTimer:
    """Wall time per stage, accumulated (a stage may run in several pieces)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    def add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] += float(seconds)

    def stage(self, name: str) -> _Timed:
        """Context manager booking its block's wall time to ``name``."""
        return _Timed(self, name)

    def as_dict(self, digits: int = 3) -> dict[str, float]:
        return {k: round(v, digits) for k, v in self.seconds.items()}


class _Timed:
    def __init__(self, timer: StageTimer, name: str) -> None:
        self.timer, self.name = timer, name

    def __enter__(self) -> _Timed:
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.timer.add(self.name, time.perf_counter() - self.started)


def _digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


class ChainRunner:
    """Run chain parts of contracts, sharing identical prefixes (see the module docstring).

    Args:
        timer: where step times are booked.
    """

    def __init__(self, timer: StageTimer | None = None) -> None:
        self.timer = timer or StageTimer()
        self._memo: dict[str, Any] = {}
        self._compiled: dict[str, Compose] = {}
        #: the output of the last run of each transform class (e.g. the registered volume after RegisterToTemplated)
        self.outputs: dict[str, Any] = {}
        #: how many times each transform class actually ran (shared prefixes are not counted again)
        self.executed: Counter[str] = Counter()

    @staticmethod
    def params_of(contract: Contract, **overrides: Any) -> dict[str, Any]:
        """The chain parameters of a contract after ``overrides`` (e.g. the atlas in use)."""
        params = dict(contract.chain_params)
        params.update(overrides)
        return chain_params(contract.chain, **params)

    def _compose(self, chain: str, part: str, params: Mapping[str, Any]) -> Compose:
        key = _digest(chain, part, params)
        if key not in self._compiled:
            self._compiled[key] = load_chain(chain, part, **params)
        return self._compiled[key]

    def step_keys(self, chain: str, part: str, params: Mapping[str, Any], input_key: str) -> list[str]:
        """One key per transform of ``part``: the input, the configurations up to it and the parameters they use."""
        configs = read_chain(chain)["parts"][part] or []
        keys, key = [], input_key
        for config in configs:
            used = sorted(set(_REFERENCE.findall(json.dumps(config, default=str))))
            key = _digest(key, config, {name: params.get(name) for name in used})
            keys.append(key)
        return keys

    def run(
        self,
        chain: str,
        part: str,
        params: Mapping[str, Any],
        data: Any,
        stage: str,
        input_key: str | None = None,
    ) -> Any:
        """Apply ``part`` of ``chain`` (with ``params``) to ``data``, booking time to the steps' stages.

        Args:
            chain: chain name or fragment path (from the contract).
            part: part name (``preprocess``, ``sample``, ``finalize``).
            params: the chain parameters (from :meth:`params_of`).
            data: a data dict, or a list of them (a multi-sample part's output).
            stage: stage for steps not in :data:`STAGE_OF_TRANSFORM`.
            input_key: a key identifying ``data`` (e.g. the series path); when given, prefix outputs are
                remembered and shared with later runs of the same input. Remembered outputs are shared, not
                copied: do not modify them in place.

        Raises:
            UserInputError: a transform rejected the input (unwrapped from MONAI's ``RuntimeError``).
        """
        compose = self._compose(chain, part, params)
        transforms = list(compose.transforms)
        keys: list[str | None] = [None] * len(transforms)
        if input_key is not None:
            step_keys = self.step_keys(chain, part, params, input_key)
            # a config entry that instantiated to None is dropped by load_chain: then keys would misalign
            if len(step_keys) == len(transforms):
                keys = list(step_keys)
        start = 0
        for i in range(len(transforms) - 1, -1, -1):
            if keys[i] is not None and keys[i] in self._memo:
                data, start = self._memo[keys[i]], i + 1
                break
        for transform, key in zip(transforms[start:], keys[start:], strict=True):
            name = type(transform).__name__
            begun = time.perf_counter()
            try:
                data = apply_transform(transform, data, map_items=compose.map_items, unpack_items=compose.unpack_items)
            except Exception as exc:
                user_error = find_user_error(exc)
                if user_error is not None:
                    raise user_error from exc
                raise
            finally:
                self.timer.add(STAGE_OF_TRANSFORM.get(name, stage), time.perf_counter() - begun)
            self.executed[name] += 1
            if key is not None:
                self._memo[key] = data
            self.outputs[name] = data
        return data
