"""Adapters wrapping third-party env suites into asyncrl envs.

Each adapter is a `gymnasium.Env` speaking asyncrl's chat protocol (observations
are tuples of chat messages, the action is the assistant's text) around one
external suite. The suite is imported inside its adapter module, lazily, so
asyncrl imports without it and nothing here reaches for the network.
"""
