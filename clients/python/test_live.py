"""google-genai's Live client (client.aio.live.connect) through the proxy, with
only the base URL and key changed. The SDK always connects with wss://, so
scripts/e2e runs this file against each host serving TLS (a test certificate,
trusted through SSL_CERT_FILE); elsewhere it is skipped, never passed."""
import asyncio
import json
import time
import urllib.request

import pytest
from google import genai
from google.genai import types

from conftest import EXTERNAL, POOL_KEYS, PROXY_KEY

MODEL = "gemini-live-2.5-flash-preview"

pytestmark = pytest.mark.skipif(
    not (EXTERNAL or "").startswith("https://"),
    reason="google-genai's Live client always uses wss://: scripts/e2e runs this against a host serving TLS",
)


def client(key=PROXY_KEY, version=None):
    options = {"base_url": EXTERNAL}
    if version:
        options["api_version"] = version
    return genai.Client(api_key=key, http_options=options)


def live_sessions(fake):
    return [r for r in fake.requests() if r["method"] == "WS"]


def stats_when(done):
    stats = None
    for _ in range(100):
        req = urllib.request.Request(EXTERNAL + "/stat.json", headers={"authorization": "Bearer " + PROXY_KEY})
        with urllib.request.urlopen(req) as r:
            stats = json.loads(r.read())
        if done(stats):
            break
        time.sleep(0.05)
    return stats


def test_live_text_turn_and_audio_round_trip_counted_under_the_key(stack, fake):
    pcm = bytes(range(256)) * 12
    got = {}

    proxy = client()

    async def run():
        config = {"response_modalities": ["TEXT"]}
        async with proxy.aio.live.connect(model=MODEL, config=config) as session:
            await session.send_client_content(
                turns=types.Content(role="user", parts=[types.Part(text="hello python")]), turn_complete=True)
            text, usage = "", None
            async for m in session.receive():
                text += m.text or ""
                usage = m.usage_metadata or usage
            got["text"], got["usage"] = text, usage
            # Audio: each chunk comes back as the model's voice, then the turn ends.
            for _ in range(3):
                await session.send_realtime_input(audio=types.Blob(data=pcm, mime_type="audio/pcm;rate=16000"))
            await session.send_realtime_input(audio_stream_end=True)
            voice = []
            async for m in session.receive():
                for part in (m.server_content.model_turn.parts if m.server_content and m.server_content.model_turn else []):
                    voice.append(part.inline_data.data)
            got["voice"] = voice

    asyncio.run(run())
    assert got["text"] == "Echo: hello python"
    assert got["usage"].prompt_token_count > 0
    assert got["voice"] == [pcm] * 3, "the audio round trip, byte for byte"
    [up] = live_sessions(fake)
    mechanism, key = up["credentials"][0]
    assert (mechanism, key in POOL_KEYS) == ("goog-api-key", True), up
    masked = key[:4] + "…" + key[-4:]

    def cell(s):
        row = next((k for k in s["keys"] if k["key"] == masked), {})
        return row.get("models", {}).get(MODEL, {})

    stats = stats_when(lambda s: cell(s).get("requests") == 1)
    assert cell(stats)["requests"] == 1, stats
    assert cell(stats)["tokens"]["prompt"] >= got["usage"].prompt_token_count


def test_live_session_with_an_ephemeral_token_minted_through_the_proxy(stack, fake):
    # (A Client closes its HTTP client once dropped: each is held while used.)
    minter = client(version="v1alpha")
    token = minter.auth_tokens.create(config={"uses": 1})
    assert token.name.startswith("auth_tokens/")

    with_token = client(token.name, "v1alpha")

    async def run():
        async with with_token.aio.live.connect(
                model=MODEL, config={"response_modalities": ["TEXT"]}) as session:
            await session.send_client_content(
                turns=types.Content(role="user", parts=[types.Part(text="token")]), turn_complete=True)
            return "".join([m.text or "" async for m in session.receive()])

    assert asyncio.run(run()) == "Echo: token"
    [up] = live_sessions(fake)
    assert up["path"].endswith("BidiGenerateContentConstrained")
    assert up["credentials"] == [["access-token", token.name]], "the token as is, no pool key"


def test_live_session_refused_without_the_proxy_key(stack, fake):
    stranger = client("AIzaSyNOTaPROXYkeyNORaCLIENTkey000000000")

    async def run():
        async with stranger.aio.live.connect(
                model=MODEL, config={"response_modalities": ["TEXT"]}) as session:
            async for _ in session.receive():
                pass

    with pytest.raises(Exception) as refused:
        asyncio.run(run())
    assert "401" in str(refused.value), refused.value
    assert live_sessions(fake) == []
