"""emgd: the daemon that turns uploaded C3D recordings into analysed, access-controlled results."""

__version__ = "0.1.0"
