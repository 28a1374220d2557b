"""Host drivers: what Linux's nvme and ahci drivers do, against the controller models' registers.

`base/` is the driver core (Linux's drivers/base) every layer registers its /sys entries with;
`pci.py` the PCI functions the host drivers sit on.
"""
