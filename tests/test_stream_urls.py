"""Stream keys are secrets: masked wherever a URL is shown."""

from __future__ import annotations

import pytest

from avatarfarm.server.stream import StreamError, StreamPipeline, mask_url
from avatarfarm.server.stream.urls import mask_text


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("rtmp://live.example.com/app/abc123", "rtmp://live.example.com/app/****"),
        ("rtmps://h.example.com:443/live/k?token=z", "rtmps://h.example.com:443/live/****?****"),
        ("rtmp://user:pw@host/app/key", "rtmp://host/app/****"),
        ("rtmp://host/app/key/", "rtmp://host/app/****/"),
        ("rtmp://host:99999/app/key", "rtmp://host:bad/app/****"),  # never raises
        ("rtmp://host:0x1/app/key", "rtmp://host:bad/app/****"),
    ],
)
def test_mask_url_hides_key_query_and_userinfo(url, masked):
    assert mask_url(url) == masked


def test_mask_text_scrubs_urls_and_known_secrets():
    text = "Connection to 'rtmp://h/app/SeCrEt' failed; key SeCrEt rejected"
    out = mask_text(text, ("SeCrEt",))
    assert "SeCrEt" not in out and "rtmp://h/app/****" in out


def test_bad_rtmp_url_error_does_not_echo_the_key():
    with pytest.raises(StreamError) as err:
        StreamPipeline("u1", 64, 64, 30, outputs=["rtmp:///nohost/SeCrEt"])
    assert "SeCrEt" not in str(err.value)


@pytest.mark.parametrize("port", ["99999", "0x1", "abc"])
def test_rtmp_url_with_a_bad_port_is_refused_by_name(port):
    with pytest.raises(StreamError, match="bad port") as err:
        StreamPipeline("u1", 64, 64, 30, outputs=[f"rtmp://h:{port}/live/SeCrEt"])
    assert err.value.field == "url" and "SeCrEt" not in str(err.value)
