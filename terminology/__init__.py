"""terminology package — filled by later issues."""
