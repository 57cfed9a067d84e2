"""Data a user brings: preprocessing presets (``preprocess.py``) and the files calibration and
evaluation read (``sources.py``: image folders, RecordIO, numpy arrays)."""
from .preprocess import LAYOUTS, PRESETS, Preprocess, make_preprocess, preprocess_for_input
from .sources import (DataError, IMAGE_EXTENSIONS, LoadedData, check_limit, list_folder, load_data,
                      open_image, read_folder, read_records, record_count)

__all__ = ["DataError", "IMAGE_EXTENSIONS", "LAYOUTS", "LoadedData", "PRESETS", "Preprocess",
           "check_limit", "list_folder", "load_data", "make_preprocess", "open_image",
           "preprocess_for_input", "read_folder", "read_records", "record_count"]
