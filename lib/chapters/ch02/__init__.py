"""Chapter 02: training report, recipe table, errors, baselines, entity swaps."""
