"""locore.export."""
