import subprocess
import sys

from nemo_terminal.cli import COMMANDS, main


def test_help_lists_every_subcommand(capsys):
    assert main([]) == 2
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


def test_python_dash_m_matches_console_script():
    out = subprocess.run([sys.executable, "-m", "nemo_terminal", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "tiny-model" in out.stdout


def test_every_subcommand_has_help():
    for name in COMMANDS:
        out = subprocess.run([sys.executable, "-m", "nemo_terminal", name, "--help"], capture_output=True, text=True)
        assert out.returncode == 0, (name, out.stderr[-2000:])
        assert "usage: nemo-terminal " + name in out.stdout
