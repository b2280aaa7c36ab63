"""The browser console's static files, installed as the package ``cicd.web`` (no Python code)."""
