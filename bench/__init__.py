"""Benchmarks and the chaos run: programs that measure or stress the system side by
side in one run (`python -m bench.NAME`), not tests. bench.preamble holds what they
all start with; nothing in the product packages imports this package."""
