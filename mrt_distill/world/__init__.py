"""The reference world: procedural music and its synthesised audio."""
