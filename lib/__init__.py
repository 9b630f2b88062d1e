"""Shared code of the HAMAM study, in two layers (README.md, "Code map").

The method and its machinery (this package's modules; nothing here imports a chapter):
config          TrainConfig, Profile, the profiles, labels, output paths
data, newsmtsc  raw files and their validation (RuSentNE-23, NewsMTSC)
folds           folds, overlap flags, prepared tables
e5, backbones   building the offline backbones; content digests
model, losses   HAMAM and its losses
training, device, sbert   one fold job (HAMAM or SBERT), precision
metrics, rules  F1pn and clustered CIs; decision rules chosen on OOF rows
ensembles       the headline: every seed's fold models pooled, its rule chosen by OOF transfer
plan, cache, executors    the runs as data; the one cache protocol; where jobs run
predict         the headline (or one run) on new text; python -m lib.predict
cli, train      python -m lib.train (status / materialise / --set experiments); imported by nothing
calibrate       a few timed steps per kind of model: what the plan costs on a fresh machine

The chapters' reporting code (`lib.chapters`): `chNN` for notebook NN (a module or a package), and the
shared report helpers `study`, `plots`, `style`, `figcheck` and `swap` (entity swaps, chapters 02 and 08).
"""
