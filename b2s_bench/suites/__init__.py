"""Suites: YAML files with located errors, the validated suite, and its cells (internal); embedded.yaml is the default."""
