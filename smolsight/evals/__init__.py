"""Evaluation: `suite` (cases as data), `scoring` (a scorer per answer type), `runner` (cases
through a model), `results` (runs and their statistics), `report` (one HTML page per run),
`compare` (runs side by side), `presets` (one question under several decoding settings),
`synth` (pictures drawn here, with known answers). Imports the engine; the trainer imports it."""
