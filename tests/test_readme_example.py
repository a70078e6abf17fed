"""The README's own-loop example runs as written: EquiMod added to a plain SimCLR loss in a user's loop."""
from __future__ import annotations

import contextlib
import io
import math
import re
from pathlib import Path

import timm
import torch

README = Path(__file__).resolve().parents[1] / "README.md"
HEADING = "## EquiMod in your own training loop"


def own_loop_example() -> str:
    """The first ```python block under the README's own-loop heading, exactly as written."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index(HEADING):]
    match = re.search(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert match, f"README.md: no python block under {HEADING!r}"
    return match.group(1)


def test_the_readme_own_loop_trains_a_few_steps_on_the_cpu():
    code = own_loop_example()
    torch.manual_seed(0)
    output = io.StringIO()
    namespace: dict = {"__name__": "readme_example"}
    with contextlib.redirect_stdout(output):
        exec(compile(code, f"{README}:{HEADING}", "exec"), namespace)

    rows = re.findall(r"loss (\S+) = (\S+) \+ (\S+), eq-gain (\S+)", output.getvalue())
    assert len(rows) == 4, output.getvalue()  # 2 epochs of 2 batches
    for total, invariance, equivariance, gain in rows:
        assert all(math.isfinite(float(v)) for v in (total, invariance, equivariance, gain))
        assert abs(float(total) - float(invariance) - float(equivariance)) <= 0.002  # printed to 3 decimals
    # the optimiser moved the user's backbone and EquiMod's heads away from their initialisation
    torch.manual_seed(0)
    initial = timm.create_model("resnet18", num_classes=0, channels=(16, 32, 64, 128))
    trained = namespace["backbone"]
    assert any(not torch.equal(a, b) for a, b in zip(initial.parameters(), trained.parameters()))
    equimod = namespace["equimod"]
    assert equimod.param_dim == namespace["augment"].num_params == 18
    assert not torch.equal(equimod.param_mean, torch.zeros(18))  # standardised with the sampled statistics
