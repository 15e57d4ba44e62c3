"""Worker runtime: one model per process, HTTP on a Unix socket. Imports only the stdlib and aiohttp here;
backend modules (and their model libraries) are imported inside the worker process only."""
