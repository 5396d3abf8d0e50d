"""Every metric the bridge exposes is documented, with its type, in docs/operations.md."""

from __future__ import annotations

import re
from pathlib import Path

from bridge.metrics import BridgeMetrics

DOC = Path(__file__).resolve().parent.parent / "docs" / "operations.md"


def test_every_metric_is_in_the_operations_guide_with_its_type() -> None:
    table = {
        match.group(1): match.group(2)
        for match in re.finditer(r"^\| `(bridge_\w+)` \| (\w+) \|", DOC.read_text(), re.M)
    }
    exposed = {
        (family.name + "_total" if family.type == "counter" else family.name): family.type
        for family in BridgeMetrics().registry.collect()
    }
    assert table == exposed
