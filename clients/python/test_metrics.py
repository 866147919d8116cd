"""GET /metrics, read by prometheus_client's own text-format parser: the
counts equal /stat.json's, the states are there, no key is."""
import json
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import POOL_KEYS, PROXY_KEY

MODEL = "py-metrics"


def _call(url, method="GET", body=None, key=PROXY_KEY):
    headers = {"content-type": "application/json"}
    if key:
        headers["authorization"] = "Bearer " + key
    data = json.dumps(body).encode() if body is not None else (b"" if method == "POST" else None)
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    with urllib.request.urlopen(req) as r:
        return r.status, r.headers.get("content-type"), r.read().decode()


def _samples(text):
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def test_metrics_parse_and_match_stat_json(stack, fake):
    url = stack["url"]
    _call(url + "/stat/reset", "POST")
    fake._call("/_fake/behavior", {"key": POOL_KEYS[0], "behavior": "per-minute:600"})
    for _ in range(4):
        _call(f"{url}/v1beta/models/{MODEL}:generateContent", "POST", {"contents": [{"parts": [{"text": "hi"}]}]})
    sent = len(fake.requests())
    # The Worker's reports land up to a second after the answers.
    for _ in range(100):
        stats = json.loads(_call(url + "/stat.json")[2])
        counted = sum(k["models"].get(MODEL, {}).get("requests", 0) for k in stats["keys"])
        if counted == sent:
            break
        time.sleep(0.05)
    assert counted == sent, stats

    status, content_type, text = _call(url + "/metrics")
    assert status == 200
    assert content_type.startswith("text/plain; version=0.0.4")
    for secret in POOL_KEYS + [PROXY_KEY]:
        assert secret not in text, "a key in /metrics"
    samples = _samples(text)
    requests = {(l["key_id"], l["model"]): v for l, v in samples["gemini_proxy_requests_total"]}
    for k in stats["keys"]:
        for model, cell in k["models"].items():
            assert requests[(k["id"], model)] == cell["requests"], (k["id"], model)
    limited = sum(v for l, v in samples["gemini_proxy_rate_limited_total"] if l["model"] == MODEL)
    assert limited == 1
    states = {(l["key_id"], l["state"]): v for l, v in samples["gemini_proxy_key_model_state"] if l["model"] == MODEL}
    first = next(k["id"] for k in stats["keys"] if k["key"] == f"{POOL_KEYS[0][:4]}…{POOL_KEYS[0][-4:]}")
    assert states[(first, "cooling")] == 1 and states[(first, "ok")] == 0, states
    assert dict((l["state"], v) for l, v in samples["gemini_proxy_keys"])["enabled"] == len(POOL_KEYS)
    assert samples["gemini_proxy_next_quota_reset_seconds"][0][1] > time.time()


def test_metrics_are_guarded_like_stat_json(stack):
    if not PROXY_KEY:
        pytest.skip("the proxy under test is open")
    with pytest.raises(urllib.error.HTTPError) as e:
        _call(stack["url"] + "/metrics", key=None)
    assert e.value.code == 401
