"""Planning (no torch): world size, batch arithmetic, strategy and the memory estimate."""
