"""Host drivers: what Linux's nvme and ahci drivers do, against the controller models' registers."""
