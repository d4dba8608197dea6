"""Authentication, authorisation and patient-level access (issue 3; R-SEC-1, R-SEC-2, R-ACT-1)."""
