"""Workspaces: ship a git repo into a VM, get commits and changes back out."""
