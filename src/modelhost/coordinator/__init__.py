"""Worker lifecycle, admission and routing. Only the coordinator starts, stops or talks to workers."""
