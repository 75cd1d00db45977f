"""Third-party reference implementations used only by tests (see each file's header)."""
