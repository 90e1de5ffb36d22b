"""The asynchronous control plane: buffer, controller, system lifecycle, bootstrap."""
