"""Image classification data sets for training spiking networks: loading from local files, batch augmentation.

Nothing is downloaded: digits ships with scikit-learn, the others are read from files found in --data-dir,
$NDSNN_DATA or system folders, and a DataFileError explains what is missing and where to get it.
"""

from .augment import augment_batch
from .errors import DataFileError
from .load import load_dataset
from .normalize import normalize_batch
from .registry import DATASETS, DatasetInfo, dataset_info

__all__ = [
    "DATASETS",
    "DataFileError",
    "DatasetInfo",
    "augment_batch",
    "dataset_info",
    "load_dataset",
    "normalize_batch",
]
