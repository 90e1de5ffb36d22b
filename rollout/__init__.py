"""Producing experience: vLLM engines, rollout workers, the agent loop, env pools."""
