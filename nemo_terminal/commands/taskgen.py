"""`nemo-terminal taskgen`: the paper's Terminal-Task-Gen (adapt, generate, envs, collect)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from nemo_terminal.taskgen.resources import domains

HELP = (
    "Make terminal tasks and training data as the paper's Terminal-Task-Gen does: `adapt` turns math/code/SWE "
    "prompts into Harbor tasks without an LLM; `generate` asks a teacher (any OpenAI-compatible endpoint) for "
    "seed- or skill-based tasks and validates them; `envs` writes and builds the 9 domain images; `collect` "
    "turns Harbor job directories into Terminal-Corpus records for `prepare`. See docs/taskgen.md."
)


def _adapt_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", required=True, metavar="FILE.jsonl",
                   help="math: {problem}; code: {input|problem}; "
                        "swe: {repo, problem_statement, files: {path: content}}")
    p.add_argument("--kind", required=True, choices=("math", "code", "swe"))
    p.add_argument("--out", required=True, metavar="DIR", help="writes DIR/tasks/<kind>-NNNNNN and DIR/report.json")
    p.add_argument("--domain", help="domain image for the tasks (default: scientific-computing for math, "
                                    "software-engineering for code and swe)")
    p.add_argument("--image-prefix", default="nemo-terminal", help="domain images are PREFIX/<domain>:TAG")


def _generate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mode", required=True, choices=("seed", "skill"))
    p.add_argument("--seeds", metavar="FILE.jsonl", help="seed mode: {problem, domain?, solution?, id?} per line")
    p.add_argument("--domains", nargs="+", metavar="DOMAIN", help=f"subset of: {' '.join(domains())}")
    p.add_argument("--num", type=int, required=True, metavar="N", help="generation attempts, one request each")
    p.add_argument("--llm-url", required=True, metavar="URL", help="OpenAI-compatible base URL, e.g. http://host:8000/v1")
    p.add_argument("--model", required=True, help="model name as the server knows it")
    p.add_argument("--api-key-env", default="OPENAI_API_KEY", metavar="NAME",
                   help="environment variable holding the API key (never pass a key on the command line)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="writes DIR/tasks/, report.json, rejected.jsonl, run.json")
    p.add_argument("--cache-dir", metavar="DIR", help="reply cache (default: OUT/cache); reuse it to resume")
    p.add_argument("--seed", type=int, default=0, help="decides domains, skills, difficulty and request seeds")
    p.add_argument("--difficulty", default="medium", choices=("easy", "medium", "hard", "mixed"))
    p.add_argument("--decontaminate-file", metavar="FILE",
                   help="benchmark instructions (.txt/.json/.jsonl, as for prepare); 14-gram overlap rejects a task")
    p.add_argument("--near-duplicate-threshold", type=float, default=0.8, metavar="J",
                   help="MinHash Jaccard over word 5-grams at which an instruction is a near-duplicate")
    p.add_argument("--max-file-bytes", type=int, default=1 << 20, metavar="B")
    p.add_argument("--max-task-bytes", type=int, default=10 << 20, metavar="B")
    p.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    p.add_argument("--max-retries", type=int, default=5, help="retries of transport errors, 429 and 5xx")
    p.add_argument("--retry-backoff", type=float, default=1.0, metavar="S",
                   help="first retry wait; doubles per retry (a server's Retry-After wins)")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--max-tokens", type=int, default=8192)
    p.add_argument("--timeout", type=float, default=600.0, metavar="S", help="per request")
    p.add_argument("--structured", default="auto", choices=("auto", "json_schema", "json_object", "none"),
                   help="response_format to ask for; auto falls back to strict parsing if the server refuses it")
    p.add_argument("--image-prefix", default="nemo-terminal", help="domain images are PREFIX/<domain>:TAG")


def _envs_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, metavar="DIR", help="writes DIR/<domain>.Dockerfile")
    p.add_argument("--domains", nargs="+", metavar="DOMAIN", help="subset of the 9 domains")
    p.add_argument("--build", action="store_true", help="also build the images")
    p.add_argument("--runtime", default="docker", choices=("docker", "podman"))
    p.add_argument("--base-image", default="python:3.12-slim-bookworm",
                   help="BASE_IMAGE build argument (any Debian-based image with python3)")
    p.add_argument("--offline", action="store_true",
                   help="install nothing (the base image already has python3, pytest and tmux; see docs/taskgen.md)")
    p.add_argument("--image-prefix", default="nemo-terminal")
    p.add_argument("--dry-run", action="store_true", help="print the build commands only")


def _collect_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("jobs", nargs="+", metavar="JOBS_DIR", help="Harbor job directories, or directories of them")
    p.add_argument("--out", required=True, metavar="FILE.jsonl", help="Terminal-Corpus records, one per trial")


SUBCOMMANDS = {
    "adapt": (_adapt_args, "math/code/SWE prompts -> Harbor tasks (no LLM, no tests)"),
    "generate": (_generate_args, "seed- or skill-based tasks from a teacher LLM, validated and counted"),
    "envs": (_envs_args, "write (and build) the 9 domain environment images"),
    "collect": (_collect_args, "Harbor job directories -> Terminal-Corpus JSONL with rewards"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, (add, text) in SUBCOMMANDS.items():
        add(sub.add_parser(name, help=text, description=text))


def _print(obj: dict) -> None:
    print(json.dumps(obj, indent=2, ensure_ascii=False))


def run(args: argparse.Namespace) -> int:
    return {"adapt": _adapt, "generate": _generate, "envs": _envs, "collect": _collect}[args.action](args)


def _adapt(args: argparse.Namespace) -> int:
    from nemo_terminal.taskgen.adapters import adapt

    report = adapt(args.input, args.kind, Path(args.out), args.domain, args.image_prefix)
    _print({k: v for k, v in report.items() if k != "tasks"})
    return 0


def _generate(args: argparse.Namespace) -> int:
    from nemo_terminal.taskgen.generate import GenerateOptions, generate
    from nemo_terminal.taskgen.llm import LLMSettings
    from nemo_terminal.taskgen.plan import plan_attempts, read_seeds
    from nemo_terminal.taskgen.validate import Limits

    seeds = read_seeds(args.seeds) if args.seeds else None
    attempts = plan_attempts(args.mode, args.num, args.seed, args.domains, args.difficulty, seeds)
    settings = LLMSettings(base_url=args.llm_url, model=args.model, api_key_env=args.api_key_env,
                           temperature=args.temperature, top_p=args.top_p, max_tokens=args.max_tokens,
                           concurrency=args.concurrency, max_retries=args.max_retries, backoff_s=args.retry_backoff,
                           timeout_s=args.timeout,
                           structured=args.structured)
    out = Path(args.out)
    opts = GenerateOptions(out=out, cache_dir=Path(args.cache_dir) if args.cache_dir else out / "cache",
                           limits=Limits(args.max_file_bytes, args.max_task_bytes),
                           decontaminate_file=args.decontaminate_file,
                           near_duplicate_threshold=args.near_duplicate_threshold, image_prefix=args.image_prefix)
    report = generate(attempts, settings, opts)
    _print({"accepted": report["accepted"], "attempts": report["attempts"],
            "rejected": {k: v for k, v in report["rejected"].items() if v}, "tokens": report["tokens"]})
    return 0


def _envs(args: argparse.Namespace) -> int:
    from nemo_terminal.taskgen.envs import build_images, write_dockerfiles

    out = Path(args.out)
    if not args.build and not args.dry_run:
        for path in write_dockerfiles(out, args.domains):
            print(path)
        return 0
    for cmd in build_images(out, args.runtime, args.base_image, args.image_prefix, args.offline, args.domains,
                            dry_run=args.dry_run):
        print(" ".join(cmd))
    return 0


def _collect(args: argparse.Namespace) -> int:
    from nemo_terminal.taskgen.collect import collect

    _print(collect(args.jobs, args.out))
    return 0
