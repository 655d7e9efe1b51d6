"""HF <-> Megatron conversion: the one mapping table, import, export and verify."""
