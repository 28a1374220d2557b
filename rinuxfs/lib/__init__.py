"""Helpers shared by drivers, the block layer, mm and the filesystems (Linux's lib/).

- `kstrtox`: parsing of numbers and booleans written to attributes (kstrtobool, kstrtoul, …).
- `bitmap`: the cpulist ("0-3,5") and cpumask ("ff,ffffffff") formats.
- `string_helpers`: string_get_size ("67.1 MB" / "64.0 MiB").
- `serial`: the serial number a simulated drive reports for its image.
- `badblocks`: a table of bad sector ranges and its sysfs text (block/badblocks.c).
- `fault_inject`: the fault attributes, should_fail and their debugfs files (lib/fault-inject.c).
- `ratelimit`: at most `burst` messages per interval (lib/ratelimit.c).

Nothing here imports another part of rinuxfs except `rinuxfs.errors`.
"""
