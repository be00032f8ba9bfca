"""locore.runtime."""
