"""What a run leaves on disk: records, per-example samples, the run folder (internal)."""
