"""Training: recipes, losses, metrics and the loops behind ``model.fit`` / ``model.evaluate``."""
