"""Per-GPU memory estimate of a training layout, before a job waits hours in a queue to OOM.

All sizes are bytes per GPU, for the *worst pipeline stage* (the first stage holds the most
in-flight activations, the last holds the logits; both are computed and the larger is reported).
Notation: s = sequence length (tokens per packed bin), b = micro-batch size (bins per forward),
h = hidden, L = layers, a = query heads, k = KV heads, d = head_dim, f = ffn, V = vocab,
tp/pp/cp/vpp = the parallel layout, dp = num_gpus / (tp·pp·cp).

Model state (megatron-core DDP + distributed optimizer, as the trainer builds them):

    P_stage  = L_s · (layer_tp / tp + 2h + 2d) + [V·h/tp embedding | V·h/tp output + h final norm]
               layer_tp = h·d·(a + 2k) + a·d·h + 3·h·f        (q,k,v + o + SwiGLU gate,up,down)
    (L_s = L/pp, or the stage's own count under parallel.first_stage_layers/last_stage_layers;
    with pp > 2 the largest middle stage is planned too, with the first stage's micro-batches in flight)
    weights  = P_stage · 2                 (bf16; 4 in fp32)
    grads    = P_stage · 4                 (fp32 main-grad buffer: grad_reduce_in_fp32=True)
    optimizer= P_stage · 12 / (dp·cp)      (fp32 master + Adam m + v, sharded over the DP×CP group;
                                            8 in fp32 runs, which need no separate master copy)

Activations: what megatron-core's autograd graph keeps for backward, tensor by tensor (e bytes
per element: 2 in bf16, 4 in fp32; rsigma and the softmax statistics are fp32 in both). Counted
per token (T = b·s/cp tokens per rank), each storage once, and checked against a real
megatron-core TransformerLayer under `saved_tensors_hooks` in tests/unit/recipes/test_planner_measured.py:
exact (5% allowed) in fp32 for TP 1/2, GQA ratios 1/2/4, SwiGLU fused and not, with the local spec
(torch norms) and core attention keeping what TE's fused attention keeps. Not measurable on CPU:
SP (the local spec refuses it) and TE's norms (input + rsigma, read from TE's source):

    seq_part = 2·e·h + 2·4        input-norm and pre-MLP-norm inputs + their fp32 rsigma
             + 2·e·h              qkv and fc1 inputs (the norm outputs)
             [+ 2·e·h]            local spec only: torch's RMSNorm also keeps its normalized input
                                  (replicated over TP, divided by tp only with SP)
    tp_part  = e(a+2k)d           qkv output (k/v and, with one KV group per rank, q are views of it)
             [+ e·a·d]            q copy: `get_query_key_value_tensors` reshapes a strided q view when
                                  a TP rank holds more than one KV group (k/tp > 1) of several q heads (a > k)
             + 4(a+k)             q/k RMSNorm rsigma  [+ e(a+k)d normalized copies, local spec only]
             + e(a+k)d            q, k after RoPE (saved by the attention kernel)
             + e·a·d + 4a         attention output (= o-proj input) + fp32 softmax statistics
             + 3·e·f              fused SwiGLU (bias_activation_fusion): fc1 output + fc2 input;
             | 5·e·f              unfused: also the SiLU output and a copy of the linear half
    rope     = 4·e·d              unfused THD RoPE: cos and sin for q and for k, not split by TP
                                  (0 with apply_rope_fusion, whose kernel reads the shared table)
    A_layer  = T · (seq_part / (tp if SP else 1) + tp_part / tp + rope)
             + 5·a·(s/cp)·s·b / tp  only for unfused attention (model.attention_backend=local):
                                    Korthikanti et al. 2022's score/softmax term; flash/fused drop it

For Qwen3-8B at TP1 in bf16 (fused SwiGLU, unfused RoPE) this is 35.8·h bytes per token, near
Korthikanti et al.'s GPT constant of 34; with the unfused SwiGLU it is 47.8·h.

Recompute (train.recompute, as mapped in models/qwen3.py):
    none      A_layer per layer
    selective megatron-core recomputes the core attention only: removes the unfused 5as² term,
              equal to none under flash/fused attention
    full      uniform, 1 layer per checkpoint: each layer keeps only its input,
              T·e·h/(tp if SP else 1), plus one layer's A_layer live while it is recomputed

Pipeline: 1F1B keeps min(pp, m) micro-batches in flight on the first stage (m = micro-batches
per step per DP rank); interleaving (vpp) multiplies that by (1 + (pp-1)/(pp·vpp)) (Narayanan
et al. 2021). The last stage holds one micro-batch plus

    logits   = T · V/tp · (2 + 4)     bf16 logits + fp32 softmax / gradient in the vocab-parallel CE
             + T · 2h · 2 / (tp if SP else 1)   final-norm and output-layer inputs

Finally a fixed workspace allowance (WORKSPACE_GIB, default 6 GiB): CUDA context (~0.5 GiB),
NCCL communicators and buffers for the TP/CP/DP/PP groups (1-2 GiB), cuBLAS/TE workspaces,
distributed-optimizer gather buckets and allocator fragmentation. It is a stated guess, not a
measurement; raise it with --workspace-gb if your container's NCCL settings use more.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from nemo_terminal.models.qwen3 import Qwen3Config
from nemo_terminal.options import Precision, Recompute
from nemo_terminal.runtime.parallel import ParallelConfig, micro_batches_per_step
from nemo_terminal.training.gpu_memory import GIB, GPU_GIB, HEADROOM, usable_gib  # noqa: F401 (re-exported)

WORKSPACE_GIB = 6.0


@dataclass
class PlanInput:
    """Everything the estimate depends on; `plan` builds it from a recipe."""

    model: Qwen3Config
    parallel: ParallelConfig
    seq_length: int
    """Tokens per packed bin (fixed by `nemo-terminal prepare --seq-length`)."""
    num_gpus: int
    micro_batch_size: int = 1
    global_batch_size: int = 128
    precision: Precision = Precision.bf16
    recompute: Recompute = Recompute.none
    fused_attention: bool = True
    """False only for megatron's local (unfused) attention, which stores the s² score matrix."""
    swiglu_fusion: bool = True
    """Fused SwiGLU (the GPU default, models/qwen3.py); False plans the unfused one."""
    rope_fusion: bool = False
    """TE's fused RoPE (train.rope_fusion where TE runs)."""
    te_norms: bool = True
    """TE's RMSNorm (attention_backend te/auto); False for the torch/local specs' torch RMSNorm."""
    workspace_gib: float = WORKSPACE_GIB


@dataclass
class MemoryPlan:
    """The worst stage's components in bytes, and what it was compared against."""

    stage: str
    components: dict[str, float]
    dp: int
    in_flight: float
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> float:
        return sum(self.components.values())


def layer_params_per_rank(m: Qwen3Config, tp: int) -> int:
    """One decoder layer's parameters held by one TP rank: its matrices are split over TP, its norm
    weights replicated. Counted from the model's own tensor shapes (Qwen3Config.hf_weight_shapes)."""
    layer0 = [shape for name, shape in m.hf_weight_shapes().items() if name.startswith("model.layers.0.")]
    return sum(math.prod(shape) // (tp if len(shape) == 2 else 1) for shape in layer0)


def stage_layer_count(m: Qwen3Config, p: ParallelConfig, stage: str) -> int:
    """Decoder layers on the `first`, `middle` (the largest), `last` or `only` stage; uneven splits
    (parallel.first_stage_layers/last_stage_layers) give the edges their own counts."""
    counts = p.stage_layers(m.num_hidden_layers)
    return {"first": counts[0], "last": counts[-1], "only": counts[0]}.get(stage, max(counts[1:-1] or [0]))


def stage_params(m: Qwen3Config, p: ParallelConfig, stage: str) -> int:
    """Parameters of one rank on the `first`, `middle` or `last` pipeline stage."""
    v_h = m.vocab_size * m.hidden_size // p.tp
    n = stage_layer_count(m, p, "only" if p.pp == 1 else stage) * layer_params_per_rank(m, p.tp)
    if p.pp == 1:
        return n + v_h + (0 if m.tie_word_embeddings else v_h) + m.hidden_size
    if stage == "first":
        return n + v_h
    if stage == "middle":
        return n
    return n + v_h + m.hidden_size  # output layer (or the tied embedding's copy) + final norm


@dataclass(frozen=True)
class Kernels:
    """Which implementation runs each piece of a layer: it decides what autograd keeps."""

    swiglu_fusion: bool = True
    """megatron's fused SwiGLU (`bias_activation_fusion`, on on GPUs: models/qwen3.py)."""
    rope_fusion: bool = False
    """TE's fused RoPE (`apply_rope_fusion`); unfused THD RoPE keeps cos/sin per layer."""
    te_norms: bool = True
    """TE's RMSNorm (input and rsigma kept); the local spec's torch RMSNorm also keeps its normalized input."""
    fused_attention: bool = True
    """False only for megatron's local (unfused) attention, which stores the s² score matrix."""


def activation_bytes_per_layer(m: Qwen3Config, p: ParallelConfig, seq_length: int, micro_batch: int,
                               fused_attention: bool = True, kernels: Kernels | None = None,
                               element_bytes: int = 2) -> float:
    """A_layer of the module docstring: one layer, one micro-batch, one rank, no recompute."""
    k_ = kernels or Kernels(fused_attention=fused_attention)
    e, f32 = element_bytes, 4
    h, a, k, d, f = m.hidden_size, m.num_attention_heads, m.num_key_value_heads, m.head_dim, m.intermediate_size
    tokens = micro_batch * seq_length / p.cp
    seq_part = 4 * e * h + 2 * f32 + (0 if k_.te_norms else 2 * e * h)
    tp_part = e * (a + 2 * k) * d + f32 * (a + k) + e * (a + k) * d + e * a * d + f32 * a
    if k // p.tp > 1 and a > k:  # q heads of several KV groups per rank: reshaping them out of the qkv view copies
        tp_part += e * a * d
    if not k_.te_norms:
        tp_part += e * (a + k) * d
    tp_part += (3 if k_.swiglu_fusion else 5) * e * f
    rope = 0 if k_.rope_fusion else 4 * e * d
    out = tokens * (seq_part / (p.tp if p.sequence_parallel else 1) + tp_part / p.tp + rope)
    if not k_.fused_attention:
        out += 5 * a * (seq_length / p.cp) * seq_length * micro_batch / p.tp
    return out


def in_flight_micro_batches(p: ParallelConfig, micro_batches_per_step: int) -> float:
    """Micro-batches whose activations the first stage holds at once under (interleaved) 1F1B."""
    if p.pp == 1:
        return 1.0
    n = float(min(p.pp, micro_batches_per_step))
    if p.vpp:
        n *= 1 + (p.pp - 1) / (p.pp * p.vpp)
    return n


def _activations(inp: PlanInput, micro_batches: int, stage: str) -> tuple[float, float]:
    m, p = inp.model, inp.parallel
    layers = stage_layer_count(m, p, stage)
    # A middle stage holds at most as many micro-batches as the first: counted as many (an upper bound).
    flight = in_flight_micro_batches(p, micro_batches) if stage in ("first", "middle") else 1.0
    kernels = Kernels(swiglu_fusion=inp.swiglu_fusion, rope_fusion=inp.rope_fusion, te_norms=inp.te_norms,
                      fused_attention=inp.fused_attention or inp.recompute == "selective")
    e = 2 if inp.precision == "bf16" else 4
    full_layer = activation_bytes_per_layer(m, p, inp.seq_length, inp.micro_batch_size, kernels=kernels,
                                            element_bytes=e)
    if inp.recompute == "full":
        tokens = inp.micro_batch_size * inp.seq_length / p.cp
        kept = tokens * e * m.hidden_size / (p.tp if p.sequence_parallel else 1)
        return layers * flight * kept + full_layer, flight
    return layers * flight * full_layer, flight


def estimate(inp: PlanInput) -> MemoryPlan:
    """Components of the worse of the first and last pipeline stage (formulas: module docstring)."""
    m, p = inp.model, inp.parallel
    p.check_model(m.num_hidden_layers, m.num_attention_heads, m.num_key_value_heads)
    dp = p.dp(inp.num_gpus)
    micro_batches = _micro_batches(inp, dp)
    weight_bytes, opt_bytes = (2, 12) if inp.precision == "bf16" else (4, 8)
    tokens = inp.micro_batch_size * inp.seq_length / p.cp
    plans = []
    stages = ("first", "middle", "last") if p.pp > 2 else ("first", "last") if p.pp == 2 else ("only",)
    for stage in stages:
        params = stage_params(m, p, "last" if stage == "only" else stage)
        act, flight = _activations(inp, micro_batches, stage)
        logits = 0.0
        if stage in ("last", "only"):
            logits = tokens * m.vocab_size / p.tp * 6 + tokens * 4 * m.hidden_size / (
                p.tp if p.sequence_parallel else 1)
        components = {
            "weights": params * weight_bytes,
            "grads (fp32 buffer)": params * 4,
            "optimizer (dist, fp32)": params * opt_bytes / (dp * p.cp),
            "activations": act,
            "logits + cross-entropy": logits,
            "workspace allowance": inp.workspace_gib * GIB,
        }
        plans.append(MemoryPlan(stage=stage, components=components, dp=dp, in_flight=flight))
    worst = max(plans, key=lambda x: x.total)
    worst.notes.append(f"{micro_batches} micro-batches per step per DP rank; {worst.in_flight:g} in flight")
    return worst


def _micro_batches(inp: PlanInput, dp: int) -> int:
    return micro_batches_per_step(inp.global_batch_size, inp.micro_batch_size, dp)


def format_table(plan: MemoryPlan, gpu_gib: float, headroom: float = HEADROOM) -> str:
    """The CLI's table: one line per component, then the total against the GPU's usable memory."""
    width = max(len(k) for k in plan.components) + 2
    lines = [f"{'component':<{width}}{'GiB':>9}", "-" * (width + 9)]
    lines += [f"{name:<{width}}{value / GIB:>9.2f}" for name, value in plan.components.items()]
    lines.append("-" * (width + 9))
    lines.append(f"{'total':<{width}}{plan.total / GIB:>9.2f}")
    verdict = "fits" if fits(plan, gpu_gib, headroom) else "DOES NOT FIT"
    lines.append(f"{'GPU memory':<{width}}{gpu_gib:>9.2f}   -> {verdict} "
                 f"({plan.total / GIB / gpu_gib * 100:.0f}% used, {plan.stage} pipeline stage; "
                 f"limit {usable_gib(gpu_gib, headroom):.1f} GiB with {headroom:.0%} headroom)")
    return "\n".join(lines)


def fits(plan: MemoryPlan, gpu_gib: float, headroom: float = HEADROOM) -> bool:
    return plan.total <= usable_gib(gpu_gib, headroom) * GIB and math.isfinite(plan.total)
