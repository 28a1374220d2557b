"""The VFS and the filesystems mounted in the simulated kernel."""
