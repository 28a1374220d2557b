"""Memory management: frames in zones, the page allocator, address spaces and counters."""
