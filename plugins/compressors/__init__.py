"""Built-in compressors, one folder each: config, codes, fit and registration."""
