"""Training data: the dataset format, building it from fits, curation and augmentation.

* :mod:`~diffface.data.format`: the on-disk dataset, the curation log and the streaming ``FaceDataset``.
* :mod:`~diffface.data.build`: ``diffface build-dataset`` (from :mod:`~diffface.data.sources`: fits,
  synthetic faces or 300W-style photo folders), with :mod:`~diffface.data.crops` (crops and the crop camera),
  :mod:`~diffface.data.quality` (automatic flags) and :mod:`~diffface.data.previews` (curation previews).
* :mod:`~diffface.data.curation`: ``diffface curate``, the local review server and its page.
* :mod:`~diffface.data.augment`: photometric augmentation of training batches on their device.
"""
