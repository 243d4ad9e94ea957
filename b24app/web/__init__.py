"""HTTP entry points, one blueprint per concern."""
