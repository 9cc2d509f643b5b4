"""The banger command line: thin, lazy, talks to the daemon."""
