"""modelhost: a self-hosted AI inference server.

Importing this package must stay cheap and dependency-free: worker processes running in other Python
environments import ``modelhost.worker`` through it.
"""

__version__ = "0.1.0"
