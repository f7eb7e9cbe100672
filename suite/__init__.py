"""bitsweep: how much accuracy and stability do networks lose with 1 to ~4 bits per weight?"""

__version__ = "0.1.0"
