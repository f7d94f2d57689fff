"""Configuration: the parameter schema, the OmegaConf resolvers, the offline defaults."""
