"""adapters package — filled by later issues."""
