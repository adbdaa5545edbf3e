"""The policy language: model, loading with positions, validation, schema."""
