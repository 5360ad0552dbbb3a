"""The installed package: the extension, the kernels mapping, the public names."""

from pathlib import Path

import pytest

import r1fast

ROOT = Path(__file__).resolve().parents[1]


def test_extension_module_is_built():
    from r1fast import _C

    assert _C.format_reward("<think>\nx\n</think>\n<answer>\n1\n</answer>") == 1.0


def test_kernels_directory_is_the_package_r1fast_kernels():
    import r1fast.kernels

    # An editable install maps kernels/ itself (edits take effect without reinstalling); a wheel copies it.
    installed = Path(r1fast.kernels.__file__).resolve().parent
    assert installed == ROOT / "kernels" or installed.name == "kernels" and installed.parent.name == "r1fast"


@pytest.mark.parametrize(
    "name",
    [
        "grpo_loss",
        "fused_linear_grpo_loss",
        "fused_linear_logprobs",
        "selective_log_softmax",
        "GRPOLoss",
        "LogitTransform",
        "group_advantages",
    ],
)
def test_public_names_resolve(name):
    assert callable(getattr(r1fast, name))


def test_unknown_attribute_raises_attribute_error():
    with pytest.raises(AttributeError, match="no attribute"):
        r1fast.not_a_thing  # noqa: B018
