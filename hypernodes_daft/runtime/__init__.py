"""The node runtime."""
