"""`bangerd-root`: banger's root helper, the only part of banger that runs as root.

It does tap mode's privileged network operations (net.admin) for members of the banger group.
"""
