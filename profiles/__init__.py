"""profiles package — filled by later issues."""
