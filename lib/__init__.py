"""Shared code of the HAMAM study: one module per concern (see README.md, "Code map")."""
