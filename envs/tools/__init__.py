"""Tools that environments hand to the model."""
