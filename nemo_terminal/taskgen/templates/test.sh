#!/bin/bash
# Verifier of a task written by `nemo-terminal taskgen`. It runs the task's pytest tests from the
# working directory; tests/conftest.py writes the weighted reward (sum of the weights of the passed
# tests / sum of all weights) to /logs/verifier/reward.txt.
mkdir -p /logs/verifier
rm -f /logs/verifier/reward.txt
cd "{{workdir}}" || { echo 0 > /logs/verifier/reward.txt; exit 0; }
python3 -m pytest /tests/test_outputs.py -rA -p no:cacheprovider -c /tests/pytest.ini --rootdir=/tests
# A pytest that could not start writes no reward: record 0 rather than leave the trial without one.
[ -s /logs/verifier/reward.txt ] || echo 0 > /logs/verifier/reward.txt
exit 0
