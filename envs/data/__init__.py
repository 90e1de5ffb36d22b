"""Data shipped with the envs: arithmetic.jsonl (Dataset-v0's default) and the script
that writes it (make_math_dataset). A package so that installing asyncrl ships both."""
