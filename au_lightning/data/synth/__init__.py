"""SynthAU: procedurally rendered faces with AU dynamics, written in the real dataset layouts.

No licensed AU dataset can be shipped or downloaded, so SynthAU is the embedded default data
(docs/synthau.md). Its writers produce BP4D, DISFA, RAF-DB, EmotioNet and generic-table
layouts, so the real readers are what every default run exercises.
"""

from au_lightning.data.synth.dynamics import EXPRESSION_EPISODES, au_timeline, nuisance_track
from au_lightning.data.synth.expressions import LABEL_CUES, PROTOTYPES, sample_expression_image
from au_lightning.data.synth.face import (
    SYNTH_AUS,
    Nuisance,
    SubjectLook,
    render_face,
    sample_look,
)
from au_lightning.data.synth.generate import LAYOUTS, Layout, SynthResult, ensure_synthau, generate
from au_lightning.data.synth.subjects import SynthSubject, make_subjects, subject_names
from au_lightning.data.synth.writers import (
    EMOTIONET_AUS,
    EMOTIONET_MAPPING,
    SynthVideo,
    emotionet_labels,
)

__all__ = [
    "EMOTIONET_AUS",
    "EMOTIONET_MAPPING",
    "EXPRESSION_EPISODES",
    "LABEL_CUES",
    "LAYOUTS",
    "PROTOTYPES",
    "SYNTH_AUS",
    "Layout",
    "Nuisance",
    "SubjectLook",
    "SynthResult",
    "SynthSubject",
    "SynthVideo",
    "au_timeline",
    "emotionet_labels",
    "ensure_synthau",
    "generate",
    "make_subjects",
    "nuisance_track",
    "render_face",
    "sample_expression_image",
    "sample_look",
    "subject_names",
]
