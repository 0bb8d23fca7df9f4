"""Window search from region histograms (paper section 3.3, figs. 6-7): which HU window shows a task's lesions.

Early ischemic regions are only ~1.7 HU darker than intact ones (old infarction ~4.1 HU), so the intensity window
decides whether a network sees the difference at all. The search looks where the difference lives:

1. **Region values.** Every labelled region of a dataset goes through the ischemic chain's deterministic part
   (ingest -> template registration -> :class:`~monai_stroke.transforms.RegionCropd`) with the same template
   slices (3 x 3 mm slabs) the networks see, at the grid's own resolution (no resizing, so voxel values are not
   interpolated), with the mirrored contralateral crop and the region masks. The values of a region are its
   ipsilateral voxels inside the region; those of its mirror are the contralateral voxels inside the
   contralateral region.
2. **Class histograms (fig. 6).** Per region a histogram normalised to a density over all its voxels (1 HU bins by
   default, values outside the range counted in the normalisation only); per class (the task's negatives and
   positives) the mean over regions.
3. **Difference histograms (fig. 7).** For each positive region whose mirror region is one of the task's
   negatives (a healthy contralateral side), ``affected - mirror``; averaged per patient, then over patients
   (every patient weighs the same, however many affected regions it has).
4. **Proposal rule.** The mean difference ``D`` is smoothed (Gaussian, ``smooth_hu``) and its absolute value
   ``|D|`` read as a mass distribution over HU, bins below ``floor`` (5 %) of its peak set to zero (the low noise a
   few pairs leave over the whole range, e.g. skull caught at a cortical region's edge, would otherwise widen the
   window): the window is the central interval holding ``mass`` (default 90 %) of it, from the ``(1 - mass) / 2`` to the ``(1 + mass) / 2`` quantile, linearly interpolated within bins:
   ``center = (low + high) / 2``, ``width = high - low``, rounded to whole HU. ``|D|`` has a lobe where the
   affected side has extra voxels (the lesion's HU) and one where the healthy side has them (parenchyma), so the
   window spans both and maps the difference onto as many grey levels as possible. For a small shift ``d`` of a
   parenchyma peak of spread ``s`` the lobes sit at about ``mean -/+ s``, giving a window ~``4 s`` wide centred on
   the parenchyma; as ``d`` grows the lower lobe follows the lesion and the window moves down and widens.

Confirmation by a training sweep over candidate windows (paper tables 2-3) is not part of this module yet.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage

from monai_stroke.errors import UserInputError
from monai_stroke.manifests.tasks import TaskDefinition, get_task

__all__ = [
    "DEFAULT_EDGES_HU",
    "WINDOW_SEARCH_CHAIN",
    "WINDOW_SEARCH_CHAIN_PARAMS",
    "RULE",
    "WindowProposal",
    "TaskHistograms",
    "region_values",
    "density",
    "propose_window",
    "collect_histograms",
    "patient_samples",
    "write_window_search",
    "window_search",
]

logger = logging.getLogger(__name__)

#: Histogram bin edges (HU): 1 HU bins over the parenchyma and fluid range (CSF 0-15, white matter ~25-30,
#: gray matter ~35-45, fresh blood 50-90).
DEFAULT_EDGES_HU = np.arange(-20.0, 100.0 + 0.5, 1.0)
#: The chain whose deterministic part gives the region values, and its overrides for the search.
WINDOW_SEARCH_CHAIN = "ischemic_regions"
WINDOW_SEARCH_CHAIN_PARAMS: dict[str, Any] = {
    "crop_size": None,  # the grid's own voxels: histograms of voxel values, not of interpolated pixels
    "contralateral": True,
    "mask_outside": False,
    "mask_key": "region_mask",
}
RULE = (
    "central {mass:.0%} of the mass of |mean affected-minus-mirror difference histogram| (Gaussian-smoothed, "
    "sigma {smooth_hu:g} HU; bins below 5% of its peak ignored): low/high = its {lo_q:.0%}/{hi_q:.0%} quantiles, "
    "center = (low + high) / 2, width = high - low, rounded to whole HU"
)


@dataclass(frozen=True)
class WindowProposal:
    """A proposed window.

    Args:
        center_hu: window center (rounded to whole HU).
        width_hu: window width (rounded to whole HU, at least 1).
        low_hu: lower quantile of the difference mass (not rounded).
        high_hu: upper quantile of the difference mass (not rounded).
    """

    center_hu: float
    width_hu: float
    low_hu: float
    high_hu: float

    def to_dict(self) -> dict[str, float]:
        return {
            "window_center_hu": self.center_hu,
            "window_width_hu": self.width_hu,
            "low_hu": round(self.low_hu, 2),
            "high_hu": round(self.high_hu, 2),
        }


def _as_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu()
        x = x.as_tensor() if hasattr(x, "as_tensor") else x
        return x.numpy()
    return np.asarray(x)


def region_values(
    sample: Mapping[str, Any], image_key: str = "image", mask_key: str = "region_mask"
) -> tuple[np.ndarray, np.ndarray | None]:
    """HU values inside a region crop's region, and inside its mirror region (None without contralateral channels).

    Args:
        sample: a :class:`~monai_stroke.transforms.RegionCropd` sample made with ``mask_key`` (and
            ``contralateral=True`` for the mirror values), in HU.
        image_key: key of the crop ``(C or 2C, H, W, S)``; channel 0 (and ``C``) are used.
        mask_key: key of the region masks ``(1 or 2, H, W, S)``.
    """
    if mask_key not in sample:
        raise UserInputError(f"region sample has no {mask_key!r} masks; crop with RegionCropd(mask_key={mask_key!r})")
    image = _as_numpy(sample[image_key]).astype(np.float64, copy=False)
    mask = _as_numpy(sample[mask_key]).astype(bool, copy=False)
    own = image[0][mask[0]]
    if mask.shape[0] < 2:
        return own, None
    return own, image[image.shape[0] // 2][mask[1]]


def density(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Histogram of ``values`` as a fraction of *all* of them per bin (values outside the edges count too)."""
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size == 0:
        return np.zeros(len(edges) - 1)
    counts, _ = np.histogram(values, bins=edges)
    return counts / values.size


def _mean_in_range(values: np.ndarray, edges: np.ndarray) -> float:
    """Mean of the values inside the histogram range: a few skull or calcification voxels caught at a region's edge
    (hundreds of HU) would otherwise outweigh a difference of a few HU."""
    inside = values[(values >= edges[0]) & (values < edges[-1])]
    return float(inside.mean()) if inside.size else float("nan")


def _smooth(difference: np.ndarray, edges: np.ndarray, smooth_hu: float) -> np.ndarray:
    """Gaussian smoothing of a histogram, sigma in HU (0: none)."""
    if smooth_hu <= 0:
        return difference
    return ndimage.gaussian_filter1d(difference, smooth_hu / float(np.mean(np.diff(edges))), mode="constant")


def propose_window(
    difference: np.ndarray, edges: np.ndarray, mass: float = 0.9, smooth_hu: float = 1.0, floor: float = 0.05
) -> WindowProposal:
    """The window holding the central ``mass`` of ``|difference|`` (see the module docstring for the rule).

    Args:
        difference: mean difference histogram (affected minus mirror), one value per bin.
        edges: bin edges in HU (``len(difference) + 1``, uniform).
        mass: fraction of the absolute difference mass inside the window, in (0, 1).
        smooth_hu: Gaussian smoothing of the difference before the rule, HU (0: none).
        floor: bins whose smoothed ``|difference|`` is below this fraction of its peak carry no mass (noise).

    Raises:
        UserInputError: no difference mass (e.g. no affected region with a healthy mirror), or bad arguments.
    """
    difference = np.asarray(difference, dtype=np.float64)
    edges = np.asarray(edges, dtype=np.float64)
    if edges.ndim != 1 or len(edges) != len(difference) + 1 or np.any(np.diff(edges) <= 0):
        raise UserInputError("histogram edges must be increasing, one more than the bins")
    if not 0.0 < mass < 1.0:
        raise UserInputError(f"mass must be in (0, 1), got {mass!r}")
    weights = np.abs(_smooth(difference, edges, smooth_hu))
    weights = np.where(weights >= floor * weights.max(), weights, 0.0) if weights.max() > 0 else weights
    total = weights.sum()
    if not np.isfinite(total) or total <= 0:
        raise UserInputError("the difference histogram is empty: no affected region with a healthy mirror region")
    cumulative = np.concatenate([[0.0], np.cumsum(weights) / total])
    low = float(np.interp((1.0 - mass) / 2.0, cumulative, edges))
    high = float(np.interp((1.0 + mass) / 2.0, cumulative, edges))
    center = float(round((low + high) / 2.0))
    width = float(max(1, round(high - low)))
    return WindowProposal(center_hu=center, width_hu=width, low_hu=low, high_hu=high)


@dataclass
class TaskHistograms:
    """Histogram sums of one task, filled sample by sample (:meth:`add`).

    Args:
        task: the task; its negatives are class 0, its positives class 1.
        edges: bin edges in HU.
    """

    task: TaskDefinition
    edges: np.ndarray = field(default_factory=lambda: DEFAULT_EDGES_HU.copy())
    class_sum: dict[int, np.ndarray] = field(init=False)
    class_regions: dict[int, int] = field(init=False)
    class_mean_hu: dict[int, list[float]] = field(init=False)
    patient_differences: dict[str, list[np.ndarray]] = field(init=False)
    pair_mean_differences: list[float] = field(init=False)

    def __post_init__(self) -> None:
        n_bins = len(self.edges) - 1
        self.class_sum = {0: np.zeros(n_bins), 1: np.zeros(n_bins)}
        self.class_regions = {0: 0, 1: 0}
        self.class_mean_hu = {0: [], 1: []}
        self.patient_differences = {}
        self.pair_mean_differences = []

    def add(self, sample: Mapping[str, Any], image_key: str = "image", mask_key: str = "region_mask") -> None:
        """Count one region sample (ignored when its category is not part of the task)."""
        category = sample.get("category", "")
        label = self.task.label_of(category) if category else None
        if label is None:
            return
        own, mirror = region_values(sample, image_key, mask_key)
        if own.size == 0:
            return
        hist = density(own, self.edges)
        self.class_sum[label] += hist
        self.class_regions[label] += 1
        self.class_mean_hu[label].append(_mean_in_range(own, self.edges))
        mirror_category = sample.get("contralateral_category", "")
        healthy_mirror = bool(mirror_category) and self.task.label_of(mirror_category) == 0
        if label == 1 and healthy_mirror and mirror is not None and mirror.size:
            patient = str(sample.get("patient_id", ""))
            self.patient_differences.setdefault(patient, []).append(hist - density(mirror, self.edges))
            self.pair_mean_differences.append(_mean_in_range(own, self.edges) - _mean_in_range(mirror, self.edges))

    def mean_histogram(self, label: int) -> np.ndarray:
        """Mean density histogram of class ``label`` (0 negatives, 1 positives); zeros without regions."""
        n = self.class_regions[label]
        return self.class_sum[label] / n if n else np.zeros_like(self.class_sum[label])

    def mean_difference(self) -> np.ndarray:
        """Mean over patients of each patient's mean (affected - mirror) histogram."""
        if not self.patient_differences:
            return np.zeros(len(self.edges) - 1)
        per_patient = [np.mean(diffs, axis=0) for diffs in self.patient_differences.values()]
        return np.mean(per_patient, axis=0)

    def propose(self, mass: float = 0.9, smooth_hu: float = 1.0) -> WindowProposal:
        """The window proposed from :meth:`mean_difference` (see :func:`propose_window`)."""
        if not self.patient_differences:
            raise UserInputError(
                f"task {self.task.name!r}: no {'/'.join(self.task.positives)} region with a "
                f"{'/'.join(self.task.negatives)} mirror region in the data, so there is no difference to search"
            )
        return propose_window(self.mean_difference(), self.edges, mass, smooth_hu)

    def summary(self, proposal: WindowProposal | None) -> dict[str, Any]:
        """Numbers for ``windows.json``: proposal, counts, mean HU per class, paired mean difference."""

        def _mean(values: Sequence[float]) -> float | None:
            finite = [v for v in values if math.isfinite(v)]
            return round(float(np.mean(finite)), 3) if finite else None

        out: dict[str, Any] = {}
        if proposal is not None:
            out.update(proposal.to_dict())
        out.update(
            {
                "task_window": [self.task.window_center_hu, self.task.window_width_hu],
                "n_regions": {"negative": self.class_regions[0], "positive": self.class_regions[1]},
                "n_patients_with_pairs": len(self.patient_differences),
                "n_pairs": len(self.pair_mean_differences),
                "mean_region_hu": {"negative": _mean(self.class_mean_hu[0]), "positive": _mean(self.class_mean_hu[1])},
                "mean_affected_minus_mirror_hu": _mean(self.pair_mean_differences),
            }
        )
        return out

    def table(self, smooth_hu: float = 1.0) -> pd.DataFrame:
        """The histograms' numbers, one row per bin."""
        difference = self.mean_difference()
        return pd.DataFrame(
            {
                "bin_low_hu": self.edges[:-1],
                "bin_high_hu": self.edges[1:],
                "negative_mean_density": self.mean_histogram(0),
                "positive_mean_density": self.mean_histogram(1),
                "difference_mean": difference,
                "difference_smoothed": _smooth(difference, self.edges, smooth_hu),
            }
        )


def collect_histograms(
    samples: Iterable[Mapping[str, Any]],
    tasks: Sequence[TaskDefinition],
    edges: np.ndarray = DEFAULT_EDGES_HU,
    image_key: str = "image",
    mask_key: str = "region_mask",
) -> dict[str, TaskHistograms]:
    """Histograms of every task from region samples (each sample is counted for every task it belongs to)."""
    histograms = {task.name: TaskHistograms(task, np.asarray(edges, dtype=np.float64)) for task in tasks}
    for sample in samples:
        for hist in histograms.values():
            hist.add(sample, image_key, mask_key)
    return histograms


def patient_samples(
    dataset_dir: str | os.PathLike,
    tasks: Sequence[TaskDefinition],
    chain: str | os.PathLike = WINDOW_SEARCH_CHAIN,
    report: dict[str, int] | None = None,
    **chain_params: Any,
) -> Iterable[dict[str, Any]]:
    """Region samples of the dataset's patients that have a labelled region in one of ``tasks``.

    Runs the chain's ``preprocess`` part (ingest, registration, crops) once per patient with
    :data:`WINDOW_SEARCH_CHAIN_PARAMS` (``chain_params`` override further keys, e.g. ``registration``). A patient
    whose registration fails its quality check (:func:`~monai_stroke.transforms.registration.registration_quality`)
    is left out with a warning: its regions would be somewhere else.

    Args:
        report: filled with ``patients`` (searched) and ``excluded_registration`` counts.
    """
    from monai_stroke.manifests import load_dataset
    from monai_stroke.transforms.chains import load_chain
    from monai_stroke.transforms.regions import REGION_CATEGORIES_KEY, region_records
    from monai_stroke.transforms.registration import registration_quality

    dataset = load_dataset(dataset_dir)
    wanted = {c for task in tasks for c in task.categories}
    records = [r for r in region_records(dataset) if any(row["category"] in wanted for row in r[REGION_CATEGORIES_KEY])]
    if not records:
        names = ", ".join(t.name for t in tasks)
        raise UserInputError(f"{dataset_dir}: no patient has a region labelled for {names} in regions.csv")
    preprocess = load_chain(chain, "preprocess", **{**WINDOW_SEARCH_CHAIN_PARAMS, **chain_params})
    report = {} if report is None else report
    report.update(patients=0, excluded_registration=0)
    for i, record in enumerate(records, 1):
        logger.info("window search: patient %d/%d (registration and region crops)", i, len(records))
        samples = preprocess(record)
        quality = registration_quality(samples[0]["image"]) if samples else {"passed": False, "brain_dice": 0.0}
        if not quality["passed"]:
            # the log names the position in the cohort, never the patient
            logger.warning(
                "window search: patient %d/%d left out: its registration failed the quality check (brain Dice %.2f)",
                i,
                len(records),
                quality["brain_dice"],
            )
            report["excluded_registration"] += 1
            continue
        report["patients"] += 1
        yield from samples


def _figures(hist: TaskHistograms, proposal: WindowProposal, smooth_hu: float, out_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    centres = (hist.edges[:-1] + hist.edges[1:]) / 2
    task = hist.task
    names = []
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    for label, name, colour in ((0, "/".join(task.negatives), "tab:blue"), (1, "/".join(task.positives), "tab:red")):
        ax.plot(
            centres, hist.mean_histogram(label), color=colour, label=f"{name} ({hist.class_regions[label]} regions)"
        )
    ax.set_xlabel("HU")
    ax.set_ylabel("fraction of region voxels per HU")
    ax.set_title(f"{task.name}: mean region histogram per class")
    ax.legend(fontsize=8)
    fig.tight_layout()
    names.append(f"class_histograms_{task.name}.png")
    fig.savefig(out_dir / names[-1])
    plt.close(fig)

    table = hist.table(smooth_hu=smooth_hu)
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.bar(centres, table["difference_mean"], width=np.diff(hist.edges), color="0.7", label="affected - mirror")
    ax.plot(centres, table["difference_smoothed"], color="black", label=f"smoothed ({smooth_hu:g} HU)")
    low, high = proposal.center_hu - proposal.width_hu / 2, proposal.center_hu + proposal.width_hu / 2
    ax.axvspan(low, high, color="tab:green", alpha=0.2, label=f"proposed {proposal.center_hu:g}/{proposal.width_hu:g}")
    t_low, t_high = task.window_hu
    for x in (t_low, t_high):
        ax.axvline(x, color="tab:purple", linestyle="--", linewidth=1)
    ax.plot(
        [], [], color="tab:purple", linestyle="--", label=f"task {task.window_center_hu:g}/{task.window_width_hu:g}"
    )
    ax.set_xlabel("HU")
    ax.set_ylabel("difference of voxel fractions")
    ax.set_title(f"{task.name}: affected minus mirrored healthy side ({len(hist.patient_differences)} patients)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    names.append(f"difference_{task.name}.png")
    fig.savefig(out_dir / names[-1])
    plt.close(fig)
    return names


def write_window_search(
    histograms: Mapping[str, TaskHistograms],
    out_dir: str | os.PathLike,
    mass: float = 0.9,
    smooth_hu: float = 1.0,
    overwrite: bool = False,
    provenance: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Propose a window per task and write ``windows.json``, ``histograms_<task>.csv`` and the PNG plots.

    The folder appears complete or not at all. A task without a single affected region with a healthy mirror is
    reported (``window_center_hu`` absent, ``problem`` given) rather than failing the others; if no task has one
    it is an error.

    Returns:
        the content of ``windows.json``.
    """
    from monai_stroke.utils import atomic_dir, write_json_atomic

    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise UserInputError(f"output folder {out_dir} exists; choose another --out or pass --overwrite")
    proposals: dict[str, WindowProposal | None] = {}
    problems: dict[str, str] = {}
    for name, hist in histograms.items():
        try:
            proposals[name] = hist.propose(mass, smooth_hu)
        except UserInputError as exc:
            proposals[name], problems[name] = None, str(exc)
    if all(p is None for p in proposals.values()):
        raise UserInputError("; ".join(problems.values()))
    lo_q, hi_q = (1 - mass) / 2, (1 + mass) / 2
    result: dict[str, Any] = {
        "rule": RULE.format(mass=mass, smooth_hu=smooth_hu, lo_q=lo_q, hi_q=hi_q),
        "confirmed_by_training": False,
        "tasks": {},
        **dict(provenance or {}),
    }
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        for name, hist in histograms.items():
            entry = hist.summary(proposals[name])
            csv_name = f"histograms_{name}.csv"
            hist.table(smooth_hu).to_csv(tmp / csv_name, index=False, float_format="%.6g")
            entry["histograms"] = csv_name
            if proposals[name] is None:
                entry["problem"] = problems[name]
            else:
                entry["figures"] = _figures(hist, proposals[name], smooth_hu, tmp)
            result["tasks"][name] = entry
        write_json_atomic(tmp / "windows.json", result)
    return result


def window_search(
    dataset_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    tasks: Sequence[str | TaskDefinition] | None = None,
    tasks_file: str | os.PathLike | None = None,
    edges: np.ndarray = DEFAULT_EDGES_HU,
    mass: float = 0.9,
    smooth_hu: float = 1.0,
    overwrite: bool = False,
    **chain_params: Any,
) -> dict[str, Any]:
    """Histograms and proposed windows of a dataset folder's labelled regions (``monai-stroke window-search``).

    Args:
        dataset_dir: a dataset folder with ``regions.csv``.
        out_dir: the output folder (``windows.json``, ``histograms_<task>.csv``, PNG plots).
        tasks: task names or definitions; None for every defined task.
        tasks_file: a user task file (see :func:`monai_stroke.manifests.load_tasks`).
        edges: histogram bin edges, HU.
        mass: fraction of the absolute difference mass the window holds.
        smooth_hu: Gaussian smoothing of the difference histogram, HU.
        overwrite: replace an existing ``out_dir``.
        chain_params: overrides of the ``ischemic_regions`` chain (e.g. ``atlas``, ``registration``).
    """
    from monai_stroke.manifests import load_tasks

    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise UserInputError(f"output folder {out_dir} exists; choose another --out or pass --overwrite")
    if not math.isfinite(mass) or not 0 < mass < 1:
        raise UserInputError(f"mass must be in (0, 1), got {mass!r}")
    if tasks is None:
        definitions = list(load_tasks(tasks_file).values())
    else:
        definitions = [get_task(t, tasks_file) for t in tasks]
    counts: dict[str, int] = {}
    samples = patient_samples(dataset_dir, definitions, report=counts, **chain_params)
    histograms = collect_histograms(samples, definitions, edges)
    provenance = {"dataset": str(Path(dataset_dir).resolve()), "chain": WINDOW_SEARCH_CHAIN, **counts}
    return write_window_search(histograms, out_dir, mass, smooth_hu, overwrite, provenance)
