"""ConfigurableResources: each an interface with one implementation per environment."""
