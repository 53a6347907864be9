"""Built-in reporters: table writers and plots."""
