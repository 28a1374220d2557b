"""The simulated machine: RAM and (with the storage work) the disk controllers."""
