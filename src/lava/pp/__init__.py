"""Small preprocessing helpers. OWNER: datasets helper."""
