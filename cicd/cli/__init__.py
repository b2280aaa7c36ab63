"""The ``cicd`` command line."""
