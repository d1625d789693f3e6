"""The sync engine: push (payments out, exactly once) and pull (records in)."""
