"""Batched fitting of a folder (or list file) of photos: resumable, sharded over ranks, written as it goes.

:func:`run_fit_job` reads and landmarks images in DataLoader workers while the device fits batches
(stage 1, landmarks; optionally stage 2, texture), and writes each image's result atomically as soon
as its batch is done. :func:`read_fit_results` merges every rank's results into one table.

This module keeps the public names in one place; the code lives in :mod:`diffface.fitting.job`:
the on-disk layout and the result ``.npz`` format are documented in :mod:`diffface.fitting.job.results`,
the image and crop frames in :mod:`diffface.fitting.job.batch`, resume and sharding in
:mod:`diffface.fitting.job.runner`.
"""

from .job import (CONFIG_NAME, FAILED_SUFFIX, FIT_SETTINGS, MESH_FORMATS, MIN_LANDMARKS, RESULT_FORMAT, RESULTS_DIR,
                  STAGES, SUMMARY_NAME, FitImageDataset, FitInput, FitJobConfig, failure_path, list_fit_inputs,
                  read_fit_result, read_fit_results, result_path, run_fit_job, write_fit_result)

__all__ = ["CONFIG_NAME", "FAILED_SUFFIX", "FIT_SETTINGS", "MESH_FORMATS", "MIN_LANDMARKS", "RESULTS_DIR",
           "RESULT_FORMAT", "STAGES", "SUMMARY_NAME", "FitImageDataset", "FitInput", "FitJobConfig", "failure_path",
           "list_fit_inputs", "read_fit_result", "read_fit_results", "result_path", "run_fit_job",
           "write_fit_result"]
