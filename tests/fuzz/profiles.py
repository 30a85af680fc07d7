"""Hypothesis profiles of the fuzz tests. `batchbus-ci` (the default here) is derandomized and
bounded, so CI runs the same examples every time; for a longer random hunt:
`.venv/bin/python -m pytest -p tests.fuzz.profiles --hypothesis-profile=batchbus-hunt tests/fuzz`."""

from hypothesis import HealthCheck, settings

settings.register_profile(
    "batchbus-ci", derandomize=True, database=None, deadline=None, max_examples=200,
    print_blob=True, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile(
    "batchbus-hunt", parent=settings.get_profile("batchbus-ci"), derandomize=False,
    max_examples=5000)
