"""b2s-bench's built-in plugins, installed as ``b2s_bench_plugins``.

Each module is an ordinary plugin, reached only through the ``b2s_bench`` entry-point group
declared in pyproject.toml, exactly like a third party's.
"""
