"""HTTPS_PROXY / HTTP_PROXY / NO_PROXY as the sidecar reads them at start-up."""

from __future__ import annotations

import base64

import pytest

from proxy.egress import EgressSettings


def test_no_variables_no_proxy() -> None:
    assert EgressSettings.from_environ({}).proxy_for("api.openai.com", 443, tls=True) is None


def test_https_proxy_with_credentials_goes_into_a_basic_authorization_never_into_its_name() -> None:
    settings = EgressSettings.from_environ({"HTTPS_PROXY": "http://me:p%40ss@proxy.corp:3128"})
    proxy = settings.proxy_for("api.openai.com", 443, tls=True)
    assert proxy is not None and proxy.name == "proxy.corp:3128"
    assert proxy.authorization == "Basic " + base64.b64encode(b"me:p@ss").decode()
    assert "p@ss" not in repr(proxy) and "p%40ss" not in repr(settings)
    assert settings.proxy_for("models.local", 80, tls=False) is None  # no HTTP_PROXY


def test_lower_case_wins_and_a_bare_host_port_is_taken() -> None:
    settings = EgressSettings.from_environ({"https_proxy": "low:8080", "HTTPS_PROXY": "http://up:1"})
    proxy = settings.proxy_for("x", 443, tls=True)
    assert proxy is not None and proxy.name == "low:8080"


@pytest.mark.parametrize(
    ("no_proxy", "host", "port", "bypassed"),
    [
        ("*", "api.openai.com", 443, True),
        ("api.openai.com", "api.openai.com", 443, True),
        ("api.openai.com", "openai.com", 443, False),
        (".corp", "llm.corp", 443, True),
        ("corp", "llm.corp", 443, True),
        ("corp", "llm.corporate", 443, False),
        ("*.corp", "a.b.corp", 443, True),
        ("llm.corp:8443", "llm.corp", 8443, True),
        ("llm.corp:8443", "llm.corp", 443, False),
        ("10.0.0.0/8", "10.1.2.3", 443, True),
        ("10.0.0.0/8", "11.1.2.3", 443, False),
        ("192.168.1.5", "192.168.1.5", 443, True),
        (" a.corp , ,b.corp ", "b.corp", 443, True),
        ("", "localhost", 443, False),  # loopback is not special unless listed
    ],
)
def test_no_proxy(no_proxy: str, host: str, port: int, bypassed: bool) -> None:
    settings = EgressSettings.from_environ({"HTTPS_PROXY": "http://proxy:3128", "NO_PROXY": no_proxy})
    assert (settings.proxy_for(host, port, tls=True) is None) is bypassed


@pytest.mark.parametrize("url", ["https://proxy:3128", "socks5://proxy:1080", "http://proxy:notaport"])
def test_an_unusable_proxy_url_is_refused_naming_the_variable_not_the_url(url: str) -> None:
    with pytest.raises(ValueError, match="HTTPS_PROXY") as caught:
        EgressSettings.from_environ({"HTTPS_PROXY": url})
    assert "proxy:" not in str(caught.value)
