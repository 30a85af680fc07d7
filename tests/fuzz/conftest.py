"""Loads the fuzz tests' bounded, derandomized Hypothesis profile unless one was chosen."""

from hypothesis import settings

from tests.fuzz import profiles  # noqa: F401 - registers the profiles

if settings.get_current_profile_name() == "default":
    settings.load_profile("batchbus-ci")
