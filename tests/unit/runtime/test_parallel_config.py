import pytest

from nemo_terminal.errors import UserError
from nemo_terminal.runtime.parallel import ParallelConfig


def test_pad_multiple_rule():
    assert ParallelConfig().pad_multiple() == 1
    assert ParallelConfig(cp=2).pad_multiple() == 4
    assert ParallelConfig(tp=4, cp=2, sequence_parallel=True).pad_multiple() == 8  # lcm(4, 8)
    assert ParallelConfig(tp=3, cp=2, sequence_parallel=True).pad_multiple() == 12  # lcm(4, 6)
    assert ParallelConfig(tp=4, sequence_parallel=True).pad_multiple() == 4


@pytest.mark.parametrize(
    "layout, message",
    [
        (dict(tp=3), "KV groups"),
        (dict(pp=3), "layers"),
        (dict(tp=16), "KV groups"),
    ],
)
def test_impossible_layouts_fail_early(layout, message):
    with pytest.raises(UserError, match=message):
        ParallelConfig(**layout).check_model(num_layers=28, num_heads=16, num_kv_heads=8)


def test_world_size_must_divide():
    with pytest.raises(UserError, match="not divisible"):
        ParallelConfig(tp=2, pp=2).dp(6)
    assert ParallelConfig(tp=2).dp(8) == 4
