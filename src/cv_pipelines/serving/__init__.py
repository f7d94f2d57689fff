"""The HTTP detection service over the registry's champion and challenger."""
