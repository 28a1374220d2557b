"""The block layer: disks, partitions and the partition-table scan.

`rinuxfs.block.partitions` reads MBR/GPT partition tables the way Linux's
`block/partitions/` does, through a sector-read callback, so that the block
layer can call it on any simulated disk and tools can call it on an image file.
"""
