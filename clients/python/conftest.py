"""Starts the fake upstream and host-runner (built by cargo) for the SDK tests."""
import os
import re
import subprocess
import tempfile
import time
import json
import urllib.request

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
# Against a proxy someone else started (scripts/e2e, for every host), or
# else against a host-runner this suite starts itself.
EXTERNAL = os.environ.get("E2E_PROXY_URL")
if EXTERNAL:
    POOL_KEYS = os.environ["E2E_POOL_KEYS"].split(",")
    PROXY_KEY = os.environ["E2E_PROXY_KEY"]
else:
    POOL_KEYS = [f"AIzaSyPYTHONpoolKEY{i:0>20}" for i in range(4)]
    PROXY_KEY = "AQ.pythonPROXYkey0123456789abcdefXYZ"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _wait_for(proc, pattern, what):
    deadline = time.time() + 60
    seen = []
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                raise RuntimeError(f"{what} exited: {''.join(seen)}")
            continue
        line = ANSI.sub("", line)
        seen.append(line)
        m = re.search(pattern, line)
        if m:
            return m.group(1)
    raise RuntimeError(f"{what} did not start: {''.join(seen)}")


class Fake:
    def __init__(self, origin):
        self.origin = origin

    def _call(self, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.origin + path, data=data, method="POST" if data else "GET")
        with urllib.request.urlopen(req) as r:
            return json.loads(r.read())

    def requests(self):
        return self._call("/_fake/requests")

    def reset(self):
        self._call("/_fake/reset", {})


@pytest.fixture(scope="session")
def stack():
    if EXTERNAL:
        req = urllib.request.Request(EXTERNAL + "/stat/reset", data=b"", method="POST",
                                     headers={"authorization": "Bearer " + PROXY_KEY})
        urllib.request.urlopen(req).read()
        yield {"url": EXTERNAL, "fake": Fake(os.environ["E2E_FAKE_ORIGIN"])}
        return
    fake = subprocess.Popen(
        [os.path.join(TARGET, "debug", "fake-upstream"), "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    origin = _wait_for(fake, r"listening on (http://\S+)", "fake-upstream")
    workdir = tempfile.mkdtemp()
    env = dict(os.environ)
    env.update({
        "API_KEYS": ",".join(POOL_KEYS),
        "PROXY_API_KEY": PROXY_KEY,
        "GEMINI_UPSTREAM_URL": origin + "/v1beta",
        "OPENAI_UPSTREAM_URL": origin + "/v1beta/openai",
        "NO_COLOR": "1",
    })
    proxy = subprocess.Popen(
        [os.path.join(TARGET, "debug", "host-runner"), "--listen", "127.0.0.1:0", "--db", os.path.join(workdir, "keys.sqlite3")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=workdir,
    )
    url = _wait_for(proxy, r"listening on (http://\S+)", "host-runner")
    try:
        yield {"url": url, "fake": Fake(origin)}
    finally:
        for p in (proxy, fake):
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


@pytest.fixture
def fake(stack):
    stack["fake"].reset()
    return stack["fake"]


def assert_upstream_saw_only_pool_keys(fake, expect_prefix):
    reqs = fake.requests()
    assert reqs, "the upstream saw no request"
    for r in reqs:
        assert len(r["credentials"]) == 1, r
        mechanism, key = r["credentials"][0]
        assert key in POOL_KEYS, "a non-pool credential went upstream"
        assert r["path"].startswith(expect_prefix), r["path"]
        expected = "bearer" if r["path"].startswith("/v1beta/openai/") else "goog-api-key"
        assert mechanism == expected, r
