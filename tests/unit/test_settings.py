"""Settings come from SLMFLOW_* variables; a bad one names itself; keys stay secret."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import SecretStr

from slmflow.errors import SettingsError
from slmflow.settings import load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("SLMFLOW_"):
            monkeypatch.delenv(name)


def test_settings_read_slmflow_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLMFLOW_SLM_BASE_URL", "http://slm:8000/v1")
    monkeypatch.setenv("SLMFLOW_LLM_MODEL", "big-model")
    monkeypatch.setenv("SLMFLOW_REQUEST_TIMEOUT", "12.5")
    monkeypatch.setenv("SLMFLOW_MAX_RETRIES", "0")
    monkeypatch.setenv("SLMFLOW_CHECKPOINT_URL", "sqlite:///tmp/cp.db")
    monkeypatch.setenv("SLMFLOW_PROJECT", "/srv/project")
    settings = load_settings()
    assert settings.slm_base_url == "http://slm:8000/v1"
    assert settings.llm_model == "big-model"
    assert settings.request_timeout == 12.5
    assert settings.max_retries == 0
    assert settings.checkpoint_url == "sqlite:///tmp/cp.db"
    assert settings.project == Path("/srv/project")


def test_defaults_apply_when_nothing_is_set() -> None:
    settings = load_settings()
    assert settings.slm_base_url is None
    assert settings.checkpoint_url == "memory"
    assert settings.local_base_url == f"http://127.0.0.1:{settings.local_port}/v1"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SLMFLOW_REQUEST_TIMEOUT", "-1"),
        ("SLMFLOW_SLM_BASE_URL", "localhost:8000"),
        ("SLMFLOW_CHECKPOINT_URL", "mysql://x"),
        ("SLMFLOW_MAX_RETRIES", "many"),
    ],
)
def test_bad_setting_names_the_variable(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=variable):
        load_settings()


def test_api_keys_never_appear_in_repr_or_str(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLMFLOW_SLM_API_KEY", "sk-slm-secret")
    monkeypatch.setenv("SLMFLOW_LLM_API_KEY", "sk-llm-secret")
    settings = load_settings()
    assert isinstance(settings.slm_api_key, SecretStr)
    assert isinstance(settings.llm_api_key, SecretStr)
    assert settings.llm_api_key.get_secret_value() == "sk-llm-secret"
    for text in (repr(settings), str(settings)):
        assert "sk-slm-secret" not in text
        assert "sk-llm-secret" not in text
