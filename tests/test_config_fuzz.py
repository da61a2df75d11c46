"""Property-based test of the config loader (hypothesis): any YAML document, and any value under any key of a run
config, is accepted or refused by `dgx validate` with exit status 0 or 2, error lines that each say something, no
traceback, and within a time bound."""

from __future__ import annotations

import time

import yaml
from click.testing import CliRunner
from dgx.grpo.cli import main
from dgx.grpo.config import RunConfig
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SECTIONS = {
    name: list(f.annotation.model_fields)
    for name, f in RunConfig.model_fields.items()
    if hasattr(f.annotation, "model_fields")
}
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(10**20), 10**20)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.sampled_from(["t", "uniform", "ink", "sde", "ode", "shapes", "dense_gain", "calibrated", "by_tag", "1e-3"])
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
KEYS = st.sampled_from(sorted({k for keys in SECTIONS.values() for k in keys} | {"name", "a", "ode_steps", "x"}))
CONFIGS = st.dictionaries(
    st.sampled_from([*SECTIONS, "seed", "device", "base", "variants", "seeds", "registry", "bogus"]),
    st.dictionaries(KEYS, VALUES, max_size=4) | VALUES,
    max_size=5,
)


def check(tmp_path, text: str) -> None:
    (tmp_path / "cfg.yaml").write_text(text, encoding="utf-8")
    t0 = time.perf_counter()
    res = CliRunner().invoke(main, ["validate", str(tmp_path / "cfg.yaml")])
    seconds = time.perf_counter() - t0
    assert "Traceback" not in res.output, res.output
    assert res.exit_code in (0, 2), (res.exit_code, res.output, text[:300])
    errors = [ln for ln in res.output.splitlines() if ln.startswith("error: ")]
    assert (res.exit_code == 0) == (not errors), res.output
    assert all(len(ln) > len("error: ") + 10 for ln in errors), res.output
    assert seconds < 5, (seconds, text[:300])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(CONFIGS)
def test_any_config_is_accepted_or_refused_in_lines_without_a_traceback(tmp_path, data):
    check(tmp_path, yaml.safe_dump(data, allow_unicode=True))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=200))
def test_any_text_is_accepted_or_refused_in_lines_without_a_traceback(tmp_path, text):
    check(tmp_path, text)
