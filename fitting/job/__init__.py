"""diffface.fitting.job: batched fitting of a folder (or list file) of photos, one module per job.

- :mod:`.config`: :class:`FitJobConfig` (YAML, dotted ``--set`` overrides).
- :mod:`.inputs`: :func:`list_fit_inputs` and the DataLoader :class:`FitImageDataset`.
- :mod:`.batch`: fitting one batch (stage 1, optionally stage 2) and mapping it back to the original images.
- :mod:`.results`: the on-disk layout and result format, its writers and readers (:func:`read_fit_results`).
- :mod:`.monitor`: the per-rank jsonl log and TensorBoard.
- :mod:`.distributed`: ranks and gloo collectives of a ``torchrun`` job.
- :mod:`.runner`: :func:`run_fit_job`, with resume and sharding over ranks.
"""

from .config import FIT_SETTINGS, MESH_FORMATS, STAGES, FitJobConfig
from .inputs import MIN_LANDMARKS, FitImageDataset, FitInput, FitItem, list_fit_inputs
from .results import (CONFIG_NAME, FAILED_SUFFIX, RESULT_FORMAT, RESULTS_DIR, SUMMARY_NAME, failure_path,
                      read_fit_result, read_fit_results, result_path, write_fit_result)
from .runner import run_fit_job

__all__ = ["CONFIG_NAME", "FAILED_SUFFIX", "FIT_SETTINGS", "MESH_FORMATS", "MIN_LANDMARKS", "RESULTS_DIR",
           "RESULT_FORMAT", "STAGES", "SUMMARY_NAME", "FitImageDataset", "FitInput", "FitItem", "FitJobConfig",
           "failure_path", "list_fit_inputs", "read_fit_result", "read_fit_results", "result_path", "run_fit_job",
           "write_fit_result"]
