"""SFT on megatron-core: config schema, trainer loop, loss, optimizer/schedule, preemption, metrics, planner."""
