"""Training data: the dataset format, building it from fits, curation and augmentation."""
