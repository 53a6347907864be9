"""The ``b2s-bench`` command line: one module per subcommand."""
