"""`eval run`: the commands it prints with --dry-run, and the server's lifetime around Harbor.

vLLM cannot run here, so `run` is tested with stand-in `vllm` and `harbor` executables
(tests/fixtures/standins: the first records its arguments and pid and serves /health, the second
records its arguments, copies a Harbor job fixture into place and exits with a chosen code). What is under
test is our orchestration: flags, health wait, report, and that the server is gone afterwards.
"""

from __future__ import annotations

import json
import shlex
import socket
from pathlib import Path

import pytest

from nemo_terminal.cli import main
from nemo_terminal.errors import UserError
from nemo_terminal.evaluation.plan import EvalSettings
from nemo_terminal.evaluation.run import dry_run_text, run_eval
from nemo_terminal.evaluation.server import Interrupted
from nemo_terminal.models.chat_template import chat_template, published_qwen3_template
from nemo_terminal.testing import process_gone

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
STANDINS = FIXTURES / "standins"  # stand-in vllm and harbor executables (see their docstrings)
SHAPES = {"8b": (36, 4096), "14b": (40, 5120), "32b": (64, 5120)}

def _export(tmp_path: Path, size: str = "8b", template: str | None = None) -> Path:
    """An export's config and tokenizer config (no weights: nothing here loads them)."""
    d = tmp_path / f"qwen3_{size}_terminal"
    d.mkdir(parents=True)
    layers, hidden = SHAPES[size]
    (d / "config.json").write_text(json.dumps({"num_hidden_layers": layers, "hidden_size": hidden}))
    template = chat_template("keep") if template is None else template
    (d / "tokenizer_config.json").write_text(json.dumps({"chat_template": template}))
    (d / "chat_template.jinja").write_text(template)
    return d


def _args(cmd: str, part: str) -> list[str]:
    (line,) = [ln for ln in cmd.splitlines() if part in ln and not ln.startswith("#")]
    return shlex.split(line)


def _flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def _kwargs(argv: list[str]) -> dict[str, str]:
    return dict(argv[i + 1].split("=", 1) for i, a in enumerate(argv) if a == "--ak")


def test_dry_run_prints_every_command_with_its_final_flags(tmp_path, capsys):
    export = _export(tmp_path)
    assert main(["eval", "run", "--hf-dir", str(export), "--jobs-dir", str(tmp_path / "jobs"), "--job-name", "j1",
                 "--attempts", "3", "--concurrency", "4", "--port", "8123", "--harbor", "/opt/h/bin/harbor",
                 "--dry-run"]) == 0
    out = capsys.readouterr().out
    vllm, harbor = _args(out, "vllm serve"), _args(out, "/opt/h/bin/harbor run")
    assert vllm[2] == str(export) and _flag(vllm, "--served-model-name") == "qwen3_8b_terminal"
    assert (_flag(vllm, "--max-model-len"), _flag(vllm, "--reasoning-parser"), _flag(vllm, "--tensor-parallel-size"),
            _flag(vllm, "--port"), _flag(vllm, "--chat-template")) == \
        ("40960", "qwen3", "1", "8123", str(export / "chat_template.jinja"))
    assert tuple(_flag(harbor, f) for f in ("--dataset", "--agent", "--model", "--n-attempts", "--n-concurrent",
                                            "--jobs-dir", "--job-name")) == \
        ("terminal-bench@2.0", "terminus-2", "hosted_vllm/qwen3_8b_terminal", "3", "4", str(tmp_path / "jobs"), "j1")
    kw = _kwargs(harbor)
    assert kw["api_base"] == "http://127.0.0.1:8123/v1" and kw["interleaved_thinking"] == "true"
    assert kw["enable_summarize"] == "false"
    assert json.loads(kw["model_info"])["max_input_tokens"] == 40960
    assert f"nemo-terminal eval report {tmp_path / 'jobs' / 'j1'}" in out and "/health" in out


@pytest.mark.parametrize("size, tp", [("14b", 2), ("32b", 4)])
def test_tensor_parallel_by_size_and_thinking_from_the_template(tmp_path, size, tp):
    text = dry_run_text(EvalSettings(hf_dir=str(_export(tmp_path, size, chat_template("strip_history"))),
                                     summarize=True))
    harbor = _args(text, " run --yes ")
    assert _flag(_args(text, "vllm serve"), "--tensor-parallel-size") == str(tp)
    assert _kwargs(harbor)["interleaved_thinking"] == "false" and _kwargs(harbor)["enable_summarize"] == "true"
    stock = dry_run_text(EvalSettings(hf_dir=str(_export(tmp_path / "x", size, published_qwen3_template())),
                                      tp=8, thinking="keep"))
    assert _flag(_args(stock, "vllm serve"), "--tensor-parallel-size") == "8"
    assert _kwargs(_args(stock, " run --yes "))["interleaved_thinking"] == "true"


def test_unknown_template_and_bad_names_are_refused(tmp_path):
    with pytest.raises(UserError, match="neither Qwen3's nor one `export` writes"):
        dry_run_text(EvalSettings(hf_dir=str(_export(tmp_path, "8b", "{{ messages }}"))))
    with pytest.raises(UserError, match="--served-name"):
        dry_run_text(EvalSettings(hf_dir=str(_export(tmp_path / "y")), served_name="a/b"))
    with pytest.raises(UserError, match="not an HF model directory"):
        dry_run_text(EvalSettings(hf_dir=str(tmp_path / "missing")))


@pytest.fixture
def standins(tmp_path, monkeypatch):
    monkeypatch.setenv("STANDIN_DIR", str(tmp_path))
    monkeypatch.setenv("STANDIN_JOB", str(FIXTURES / "harbor_eval_job" / "tb2-qwen3-8b"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return EvalSettings(hf_dir=str(_export(tmp_path)), jobs_dir=str(tmp_path / "jobs"), job_name="j",
                        port=port, vllm=str(STANDINS / "vllm"), harbor=str(STANDINS / "harbor"), health_timeout_s=30)



@pytest.mark.parametrize("harbor_rc", [0, 3])
def test_server_serves_harbor_then_is_stopped_and_the_job_reported(standins, tmp_path, monkeypatch, capsys, harbor_rc):
    monkeypatch.setenv("STANDIN_HARBOR_RC", str(harbor_rc))
    assert run_eval(standins) == harbor_rc
    vllm = json.loads((tmp_path / "vllm.json").read_text())
    harbor = json.loads((tmp_path / "harbor.json").read_text())
    assert vllm["argv"][:2] == ["serve", standins.hf_dir] and "--reasoning-parser" in vllm["argv"]
    assert _kwargs(harbor)["api_base"] == f"http://127.0.0.1:{standins.port}/v1"
    assert process_gone(vllm["pid"])
    assert "accuracy 33.3% ± 19.2" in capsys.readouterr().out
    assert (tmp_path / "jobs" / "j" / "eval_report.json").is_file()


def test_a_server_that_dies_before_health_is_an_error_and_harbor_never_runs(standins, tmp_path, monkeypatch):
    monkeypatch.setenv("STANDIN_VLLM_FAIL", "1")
    with pytest.raises(UserError, match="exited with code 7 before it was healthy"):
        run_eval(standins)
    assert not (tmp_path / "harbor.json").exists()


def test_sigterm_during_the_job_stops_the_server(standins, tmp_path, monkeypatch):
    monkeypatch.setenv("STANDIN_HARBOR_SIGTERM", "1")
    with pytest.raises(Interrupted, match="SIGTERM"):
        run_eval(standins)
    assert process_gone(json.loads((tmp_path / "vllm.json").read_text())["pid"])
