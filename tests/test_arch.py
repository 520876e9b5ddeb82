import json

import pytest

from nas2deploy.arch import Arch, build, load_arch, save_arch
from nas2deploy.errors import UserError


def _doc(**over):
    doc = {
        "format": "nas2deploy.arch", "version": 1, "name": "t", "input_size": 32, "num_classes": 10,
        "stem": {"conv": 16, "out": 16, "stride": 1},
        "blocks": [{"out": 24, "stride": 2, "head": "k3e6", "stack": ["skip", "k5e3"]}],
        "tail": 64,
    }
    doc.update(over)
    return doc


def test_round_trip_and_skip_layers_vanish(tmp_path):
    arch = Arch.from_dict(_doc())
    save_arch(arch, tmp_path / "a.json")
    again = load_arch(tmp_path / "a.json")
    assert again == arch
    keys = [s.key for s in arch.op_specs()]
    assert "skip_i24x16x16" not in keys and len(keys) == 6
    assert len(arch.op_specs(include_free=True)) == 7
    assert len(build(arch)) == 6


@pytest.mark.parametrize("change, message", [
    ({"blocks": [{"out": 24, "stride": 3, "head": "k3e6"}]}, r"blocks\[0\]\.stride must be 1 or 2"),
    ({"blocks": [{"out": 24, "stride": 2, "head": "k4e6x"}]}, r"blocks\[0\]\.head: unknown op 'k4e6x'"),
    ({"blocks": [{"out": 24, "stride": 2, "head": "skip"}]}, r"blocks\[0\]\.head: op 'skip' needs stride 1"),
    ({"tail": -1}, "field tail must be a positive integer"),
    ({"stem": {"conv": 16, "out": 16}}, "missing field stem.stride"),
])
def test_invalid_archs_name_the_field(change, message):
    with pytest.raises(UserError, match=message):
        Arch.from_dict(_doc(**change))


def test_corrupt_and_wrong_version_files(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "nas2deploy.arch", "vers')
    with pytest.raises(UserError, match="not valid JSON.*corrupt or truncated"):
        load_arch(bad)
    bad.write_text(json.dumps(_doc(version=9)))
    with pytest.raises(UserError, match="format version 9 is not supported"):
        load_arch(bad)
