"""au-lightning: facial action unit research on PyTorch Lightning.

The public API is what this module and its subpackages' ``__init__`` export; plugins import
nothing else from the core.
"""

from au_lightning import data, fewshot_results, losses, metrics, nn, published, registry, reports
from au_lightning.data import (
    AU_SETS,
    AUDataModule,
    DatasetFormatError,
    Fold,
    FrameDataset,
    FrameIndex,
    ImageReadError,
    SplitError,
    read_dataset,
)
from au_lightning.distributed import gather_objects
from au_lightning.early_stopping import EarlyStopping
from au_lightning.errors import ConfigError
from au_lightning.fewshot_results import AdaptationRecord
from au_lightning.losses import (
    SelectiveTarget,
    masked_bce,
    max_margin_loss,
    positive_weights,
    selective_weights,
)
from au_lightning.meta import InnerLoop, InnerOptimizer, MetaBackend, check_meta_precision
from au_lightning.method import AUMethod, LossWeights, PredictionWriter, run_directory
from au_lightning.metrics import (
    AUDetectionMetrics,
    AUIntensityMetrics,
    EpisodeAccuracy,
    ThresholdCriterion,
    ThresholdSearch,
    event_f1,
    f1_at_thresholds,
    final_scores,
    icc3_1,
    intensity_mae,
    mean_over_folds,
    search_thresholds,
)
from au_lightning.published import (
    PublishedRow,
    PublishedTable,
    RowRef,
    RunSetting,
    paper_rows,
    parse_table,
    published_tables,
)
from au_lightning.visualize import (
    au_visualizations,
    load_method,
    to_uint8,
    write_visualizations,
)

__version__ = "0.1.0"

__all__ = [
    "AU_SETS",
    "AUDataModule",
    "AUDetectionMetrics",
    "AUIntensityMetrics",
    "AUMethod",
    "AdaptationRecord",
    "ConfigError",
    "DatasetFormatError",
    "EarlyStopping",
    "EpisodeAccuracy",
    "Fold",
    "FrameDataset",
    "FrameIndex",
    "ImageReadError",
    "InnerLoop",
    "InnerOptimizer",
    "LossWeights",
    "MetaBackend",
    "PredictionWriter",
    "PublishedRow",
    "PublishedTable",
    "RowRef",
    "RunSetting",
    "SelectiveTarget",
    "SplitError",
    "ThresholdCriterion",
    "ThresholdSearch",
    "__version__",
    "au_visualizations",
    "check_meta_precision",
    "data",
    "event_f1",
    "f1_at_thresholds",
    "fewshot_results",
    "final_scores",
    "gather_objects",
    "icc3_1",
    "intensity_mae",
    "load_method",
    "losses",
    "masked_bce",
    "max_margin_loss",
    "mean_over_folds",
    "metrics",
    "nn",
    "paper_rows",
    "parse_table",
    "positive_weights",
    "published",
    "published_tables",
    "read_dataset",
    "registry",
    "reports",
    "run_directory",
    "search_thresholds",
    "selective_weights",
    "to_uint8",
    "write_visualizations",
]
