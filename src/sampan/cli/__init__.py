"""Command-line entry points: argument parsing and dispatch only, no logic."""
