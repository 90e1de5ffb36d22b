"""The asynchronous control plane: buffer, controller, system lifecycle (the starting
policy comes from the bootstrap package)."""
