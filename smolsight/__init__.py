"""smolsight: dependable SmolVLM2 for cameras."""
