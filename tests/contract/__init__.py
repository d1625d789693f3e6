"""Contract tests: the adapters against recorded provider traffic (vcrpy)."""
