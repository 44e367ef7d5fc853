"""The data layer: real layouts -> FrameIndex -> subject-exclusive splits -> batches."""

from au_lightning.data.cache import cache_dir, cached_read, sources_unchanged
from au_lightning.data.datamodules import SAMPLERS, AUDataModule, Protocol
from au_lightning.data.datasets import FrameDataset, load_frame
from au_lightning.data.errors import DatasetFormatError, ImageReadError, SplitError
from au_lightning.data.formats import (
    AFFECTNET_EXPRESSIONS,
    RAFDB_EXPRESSIONS,
    read_affectnet,
    read_bp4d,
    read_bp4dplus,
    read_dataset,
    read_disfa,
    read_emotionet,
    read_rafdb,
    read_table,
)
from au_lightning.data.index import AU_SETS, FrameIndex, intensity_threshold, resolve_aus
from au_lightning.data.splits import (
    PUBLISHED_PARTS,
    Fold,
    ValidationStrategy,
    cross_dataset_fold,
    fold_rows,
    folds_from_parts,
    leave_one_subject_out,
    published_folds,
    select_fold,
    subject_folds,
    validation_reserve,
)
from au_lightning.data.transforms import eval_transform, train_transform

__all__ = [
    "AFFECTNET_EXPRESSIONS",
    "AU_SETS",
    "PUBLISHED_PARTS",
    "RAFDB_EXPRESSIONS",
    "SAMPLERS",
    "AUDataModule",
    "DatasetFormatError",
    "Fold",
    "FrameDataset",
    "FrameIndex",
    "ImageReadError",
    "Protocol",
    "SplitError",
    "ValidationStrategy",
    "cache_dir",
    "cached_read",
    "cross_dataset_fold",
    "eval_transform",
    "fold_rows",
    "folds_from_parts",
    "intensity_threshold",
    "leave_one_subject_out",
    "load_frame",
    "published_folds",
    "read_affectnet",
    "read_bp4d",
    "read_bp4dplus",
    "read_dataset",
    "read_disfa",
    "read_emotionet",
    "read_rafdb",
    "read_table",
    "resolve_aus",
    "select_fold",
    "sources_unchanged",
    "subject_folds",
    "train_transform",
    "validation_reserve",
]
