"""Shared code of the HAMAM study, one module per concern (README.md, "Code map").

Three parts: the plan (`plan`: every run the chapters read, by name), the cache (`cache`: keys over every
input, `done.json` last) and the chapters (notebooks/, which only read).

config      TrainConfig, Profile, the profiles, labels, output paths
plan        the runs as data; status / materialise / read; python -m lib.plan, python -m lib.train
cache       the one cache protocol
data, folds raw files and their validation; folds, overlap flags, prepared tables
e5, backbones   building the offline backbones
model, losses, train, device, executors   HAMAM, its losses, one fold job, precision, where jobs run
predict     python -m lib.predict: the headline model on new text
metrics, study  F1pn and clustered CIs; what every chapter shares
baselines, thresholds, ablation, errors, swap, sbert, sbert_report, bench, attention, lexicon,
attention_report, imbalance, corpus   the chapters' own computations, figures and answers
plots, figcheck     figure style and saving; the text check of every figure
"""
