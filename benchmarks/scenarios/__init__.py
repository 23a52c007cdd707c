"""The benchmark scenarios, in the order they run by default."""
