"""Megatron checkpoints: the directory contract, save/load and the torch_dist reader."""
