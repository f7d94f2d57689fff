"""Dataset versions: DVC snapshots of the store and registries, git commits and tags."""
