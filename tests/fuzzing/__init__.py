"""Fuzz targets for hostile input, shared by the unit tests and `scripts/fuzz`.

Each target module offers a hypothesis strategy that draws one case and a
`check_*` function that runs the case and raises AssertionError (or whatever
the code under test raised) when something is wrong:

- `partitions`: disk images with hostile MBR/EBR/GPT tables, scanned by
  `rinuxfs.block.partitions.probe` and compared with `linux_partitions`, a
  transcription of Linux's own scan used as the oracle;
- `nvme`: register-, queue- and command-level abuse of the NVMe model;
- `ahci`: the same for the AHCI HBA model.

`campaign` runs many cases of a target and reports what it found
(`scripts/fuzz`); the unit tests run a small, derandomized sample of each.
"""
