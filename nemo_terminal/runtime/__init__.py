"""Process setup: distributed init, megatron parallel state, the device, the CPU compatibility layer.

No re-exports: `parallel.py` (the layout) is torch-free and imported by `prepare`'s workers, so
importing this package must not import torch. Import from the submodules.
"""
