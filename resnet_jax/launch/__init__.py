"""Running on many devices and processes: the device mesh and shardings (`sharding`), joining a
multi-process run (`multiprocess`), and the host allocator settings (`host_memory`)."""
