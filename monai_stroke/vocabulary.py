"""The controlled vocabulary every stage shares: ASPECTS regions, sides, label categories, RSNA subtypes.

Manifests, the synthetic cohort, the atlas and the report all spell these the same way; import them
from here rather than retyping the strings.
"""

from __future__ import annotations

__all__ = [
    "REGIONS",
    "GANGLIONIC_REGIONS",
    "SUPRAGANGLIONIC_REGIONS",
    "SIDES",
    "CATEGORIES",
    "EARLY_ISCHEMIC_CATEGORIES",
    "HEMORRHAGE_SUBTYPES",
    "HEMORRHAGE_LABELS",
]

#: The 10 ASPECTS regions per hemisphere: caudate, lentiform nucleus, internal capsule (posterior limb),
#: insular ribbon, and the MCA cortex M1-M3 (ganglionic level) and M4-M6 (supraganglionic level).
REGIONS: tuple[str, ...] = ("C", "L", "IC", "I", "M1", "M2", "M3", "M4", "M5", "M6")
GANGLIONIC_REGIONS: tuple[str, ...] = ("C", "L", "IC", "I", "M1", "M2", "M3")
SUPRAGANGLIONIC_REGIONS: tuple[str, ...] = ("M4", "M5", "M6")

#: The patient's own left and right (in RAS world coordinates the patient's left is x < 0).
SIDES: tuple[str, ...] = ("L", "R")

#: Ground-truth categories per region (paper section 3.1).
CATEGORIES: tuple[str, ...] = (
    "intact",
    "old_infarction",
    "recent_infarction",
    "frank_hypodensity",
    "territorial_infarction",
    "scattered_infarction",
)
#: Categories that are "early ischemic change" in the paper's early_vs_intact task.
EARLY_ISCHEMIC_CATEGORIES: tuple[str, ...] = ("frank_hypodensity", "territorial_infarction")

#: RSNA Intracranial Hemorrhage Detection subtypes, in the order of the network's outputs 1..5.
HEMORRHAGE_SUBTYPES: tuple[str, ...] = (
    "epidural",
    "intraparenchymal",
    "intraventricular",
    "subarachnoid",
    "subdural",
)
#: The hemorrhage network's 6 outputs: "any" first, then the subtypes.
HEMORRHAGE_LABELS: tuple[str, ...] = ("any", *HEMORRHAGE_SUBTYPES)
