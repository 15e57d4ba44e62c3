"""Media helpers: pure functions, no model code (audio decoding runs in workers; subtitles anywhere)."""
