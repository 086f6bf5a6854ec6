"""Mail sources: adapters that hand raw message bytes to the pipeline."""
