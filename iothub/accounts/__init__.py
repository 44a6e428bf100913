"""People who use the hub and their roles: group `viewer` reads, group `operator` reads and
writes, superusers administer."""
