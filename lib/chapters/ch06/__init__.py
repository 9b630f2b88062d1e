"""Chapter 06: attention maps, attribution and the word groups."""
