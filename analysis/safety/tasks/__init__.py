"""Task YAMLs for lm-eval (package data, registered with TaskManager(include_path=...))."""
