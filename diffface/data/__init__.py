"""The training data the networks read: the dataset format, crops in the crop camera, augmentation.

* :mod:`~diffface.data.format`: the on-disk dataset, the curation log and the streaming ``FaceDataset``.
* :mod:`~diffface.data.crops`: crops and the crop camera.
* :mod:`~diffface.data.augment`: photometric augmentation of training batches on their device.

Building a dataset and curating it are application work, above fitting: :mod:`diffface.app.dataset`.
"""
