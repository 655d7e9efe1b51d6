"""Terminal-Bench 2.0 evaluation of an export: plan (the vllm/harbor command lines), server (a
vLLM process bounded by a `with`), run (serve + Harbor + report), report (the paper's table)."""
