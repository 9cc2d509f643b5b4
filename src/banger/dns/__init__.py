"""banger's authoritative DNS for the `.vm` zone."""
