"""Training data on the way in: loaders for the published layouts, quality checks, manifests, split.

A loader turns a dataset's own files into :class:`~deeptrust.training.datasets.example.Example`
rows;
:func:`~deeptrust.training.datasets.quality.check_quality` keeps the usable ones and says why the
others were dropped; :mod:`~deeptrust.training.datasets.manifest` pins what was kept to a version;
and
:mod:`~deeptrust.training.datasets.split` assigns each file to train or test by its content.
"""
