"""Qwen3: config, model provider and layer spec, tokenizer, chat rendering, packed/CP attention."""
