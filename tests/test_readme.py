"""The README's hand-composition example runs as written."""

import re
from pathlib import Path

import numpy as np

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_composition_example_runs():
    text = README.read_text()
    section = text[text.index("### Composing the pieces by hand") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 - our own documentation
    total, terms = scope["total"], scope["terms"]
    assert set(terms) == {"bsp", "inv_d"}
    # With the identity as "network", inv_d is the RMS change at the masked pixels (> 0).
    assert float(terms["inv_d"]) > 0 and np.isfinite(float(total))
    np.testing.assert_allclose(total, terms["bsp"] + 0.5 * terms["inv_d"], rtol=1e-6)


def test_readme_starts_with_the_two_commands():
    text = README.read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    assert "jdeconv demo" in blocks[0]
    assert "pytest" in blocks[1]
