"""Chapter 05: SBERT vs cross-encoder report and throughput."""
