"""The asynchronous control plane: buffer, controller, system lifecycle (the starting
policy comes from bootstrap/, the chaos run lives in bench/chaos)."""
