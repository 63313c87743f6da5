"""pathology.ssl stage: MoCo v2 self-supervised pretraining (`domainfm pathology pretrain`).

Python API: ``from domainfm.pathology.ssl.train import pretrain``; ``MocoConfig`` in ``.config``;
the model in ``.moco``; augmentations (incl. HED stain jitter) in ``.augment``.
"""
