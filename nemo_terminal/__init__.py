"""nemo_terminal: fine-tune Qwen3 into terminal agents on megatron-core."""

__version__ = "0.1.0"
