"""Webhook signatures (sign and verify) and the endpoints configuration."""

import json
from pathlib import Path

import pytest
from pydantic import SecretStr

from batchbus.services.intake.validation import Limits, Rejection, check_webhook, validate_task
from batchbus.shared.models import Task
from batchbus.shared.webhooks import (
    InvalidWebhookConfig,
    WebhookSettings,
    parse_endpoints,
    signature,
    verify_signature,
)

SECRET = "whsec_" + "s" * 26
BODY = b'{"task_id":"t1","tenant":"acme","status":"succeeded"}'
NOW = 1_800_000_000


def test_a_signature_verifies_with_its_secret_body_and_a_fresh_timestamp() -> None:
    header = signature(SecretStr(SECRET), BODY, NOW)
    assert header.startswith(f"t={NOW},v1=")
    assert verify_signature(SECRET, header, BODY, now=NOW + 10)
    assert verify_signature(SecretStr(SECRET), header, BODY, tolerance=60, now=NOW - 60)


@pytest.mark.parametrize("case", ["other body", "other secret", "stale", "future", "retimed"])
def test_anything_changed_fails_verification(case: str) -> None:
    header = signature(SECRET, BODY, NOW)
    body, secret, now = BODY, SECRET, float(NOW)
    if case == "other body":
        body = BODY.replace(b"succeeded", b"errored")
    elif case == "other secret":
        secret = SECRET + "x"
    elif case == "stale":
        now = NOW + 301.0
    elif case == "future":
        now = NOW - 301.0
    else:  # a captured delivery replayed with a new timestamp and the old MAC
        header = header.replace(f"t={NOW}", f"t={NOW + 1000}")
        now = NOW + 1000.0
    assert not verify_signature(secret, header, body, now=now)


@pytest.mark.parametrize("header", [None, "", "garbage", "t=abc,v1=00", "v1=00", f"t={NOW}",
                                    f"t={NOW},v1=", f"t={NOW},,=,v1"])
def test_malformed_headers_are_false_not_errors(header: str | None) -> None:
    assert not verify_signature(SECRET, header, BODY, now=NOW)


def test_any_v1_entry_may_match_while_a_secret_rotates() -> None:
    old = signature("o" * 32, BODY, NOW)
    new = signature(SECRET, BODY, NOW).split(",")[1]
    assert verify_signature(SECRET, f"{old},{new}", BODY, now=NOW)
    assert verify_signature("o" * 32, f"{old},{new}", BODY, now=NOW)


def config(**endpoints: object) -> dict[str, object]:
    return {"acme": {"crm": {"url": "https://hooks.acme.example/batchbus", "secret": SECRET},
                     **endpoints}}


def test_endpoints_are_per_tenant_and_secrets_stay_secret() -> None:
    endpoints = parse_endpoints(config())
    crm = endpoints.get("acme", "crm")
    assert crm is not None and crm.secret.get_secret_value() == SECRET
    assert SECRET not in repr(crm) and SECRET not in str(crm)
    assert endpoints.get("other", "crm") is None and endpoints.names("other") == frozenset()
    assert endpoints.tenants() == {"acme": frozenset({"crm"})}


@pytest.mark.parametrize(("bad", "words"), [
    ({"url": "ftp://x.example/", "secret": SECRET}, "http"),
    ({"url": "/relative", "secret": SECRET}, "http"),
    ({"url": "https://x.example/", "secret": "short-secret"}, "secret"),
    ({"url": "https://x.example/", "secret": SECRET, "extra": 1}, "extra"),
])
def test_a_bad_endpoint_is_refused_without_quoting_its_secret(bad: dict[str, object],
                                                              words: str) -> None:
    with pytest.raises(InvalidWebhookConfig) as info:
        parse_endpoints(config(bad=bad))
    assert "acme.bad" in str(info.value) and words in str(info.value)
    assert SECRET not in str(info.value) and "short-secret" not in str(info.value)


@pytest.mark.parametrize("data", [[], {"bad tenant": {}}, {"acme": {"bad.name": {}}},
                                  {"acme": []}])
def test_a_bad_shape_is_refused(data: object) -> None:
    with pytest.raises(InvalidWebhookConfig):
        parse_endpoints(data)


def test_settings_read_a_file_and_inline_json(tmp_path: Path) -> None:
    path = tmp_path / "webhooks.json"
    path.write_text(json.dumps(config()))
    inline = {"beta": {"ops": {"url": "http://127.0.0.1:9/hook", "secret": SECRET}}}
    endpoints = WebhookSettings(file=str(path), inline=SecretStr(json.dumps(inline))).load()
    assert endpoints.tenants() == {"acme": frozenset({"crm"}), "beta": frozenset({"ops"})}
    assert len(WebhookSettings().load()) == 0

    path.write_text('{"acme": {"crm": {"url": "https://x.example", "secret": "' + SECRET)
    with pytest.raises(InvalidWebhookConfig) as info:
        WebhookSettings(file=str(path)).load()
    assert "not valid JSON" in str(info.value) and SECRET not in str(info.value)
    with pytest.raises(InvalidWebhookConfig, match="WEBHOOKS_FILE"):
        WebhookSettings(file=str(tmp_path / "missing.json")).load()


LIMITS = Limits(allowed_models=None, max_tokens=4096, max_task_bytes=10_000,
                webhooks={"acme": frozenset({"crm"})})


def task(**extra: object) -> bytes:
    return json.dumps({"task_id": "t1", "params": {"model": "m", "max_tokens": 5,
                       "messages": [{"role": "user", "content": "hi"}]}, **extra}).encode()


def test_intake_accepts_only_a_configured_name_of_the_tasks_tenant() -> None:
    ok = validate_task(task(webhook="crm"), LIMITS)
    assert isinstance(ok, Task) and check_webhook(ok, "acme", LIMITS) is None
    for tenant, name in [("acme", "other"), ("beta", "crm"), ("acme", "https://169.254.169.254/")]:
        named = validate_task(task(webhook=name), LIMITS)
        assert isinstance(named, Task)
        rejection = check_webhook(named, tenant, LIMITS)
        assert rejection is not None and rejection.reason == "unknown_webhook"
        assert name in rejection.message and "not configured" in rejection.message


def test_a_rejection_remembers_the_endpoint_the_task_named() -> None:
    rejected = validate_task(task(webhook="crm", route="sideways"), LIMITS)
    assert isinstance(rejected, Rejection) and rejected.webhook == "crm"
