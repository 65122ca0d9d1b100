"""lm-eval YAML templates of the embedded control tasks, rendered with generated data (evaluate.py)."""
