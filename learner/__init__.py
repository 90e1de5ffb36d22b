"""Consuming experience: DeepSpeed learner ranks, losses, weight publishing."""
