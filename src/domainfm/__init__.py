"""domainfm: from raw in-domain data to an evaluated, attributable foundation model.

Importing this package is cheap: it pulls in nothing heavy and never touches the network.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
