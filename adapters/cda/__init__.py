"""CDA R2 imaging report documents (CI-SIS IMG-CR-IMG 2024.01) and their delivery."""
