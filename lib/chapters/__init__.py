"""Each chapter's own computations, tables, figures and answers (the reporting layer)."""
