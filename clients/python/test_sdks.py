"""The official Python SDKs, with only base URL and key changed."""
import base64
import json
import struct

import pytest
from google import genai
from google.genai import types
import openai

from conftest import POOL_KEYS, PROXY_KEY, assert_upstream_saw_only_pool_keys

MODEL = "gemini-2.5-flash"


@pytest.fixture
def oai(stack):
    return openai.OpenAI(base_url=stack["url"] + "/v1", api_key=PROXY_KEY, max_retries=0)


def test_openai_chat(oai, fake):
    r = oai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert r.choices[0].message.content == f"Hello from the fake {MODEL}."
    assert_upstream_saw_only_pool_keys(fake, "/v1beta/openai/chat/completions")


def test_openai_chat_stream(oai, fake):
    chunks = list(oai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "chunk 0 chunk 1 chunk 2 "
    assert_upstream_saw_only_pool_keys(fake, "/v1beta/openai/chat/completions")


def test_openai_chat_on_an_aliased_model_names_it_back(oai, fake):
    # gpt-5-mini goes to gemini-2.5-flash by the default aliases; the answer,
    # plain or streamed, names the model asked for.
    r = oai.chat.completions.create(model="gpt-5-mini", messages=[{"role": "user", "content": "hi"}])
    assert r.model == "gpt-5-mini"
    assert r.choices[0].message.content == "Hello from the fake gemini-2.5-flash."
    chunks = list(oai.chat.completions.create(model="gpt-5-mini", messages=[{"role": "user", "content": "hi"}], stream=True))
    assert chunks and all(c.model == "gpt-5-mini" for c in chunks)
    assert [r["model"] for r in fake.requests()] == ["gemini-2.5-flash", "gemini-2.5-flash"]


CHAT_WEATHER = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
}


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_openai_chat_client_that_drops_extra_content_completes_a_gemini_3_tool_call(oai, fake, stream):
    # A chat app that knows nothing of Google's extra_content: it keeps a
    # tool call's id, name and arguments only. Google's layer refuses the
    # next turn on Gemini 3 without the signature; the proxy puts back the
    # one it relayed (the fake's model says it got its reasoning back).
    model = "gemini-3-flash-preview"
    ask = [{"role": "user", "content": 'Please CALL get_weather {"city": "Paris"}'}]

    def chat(messages):
        if not stream:
            return oai.chat.completions.create(model=model, messages=messages, tools=[CHAT_WEATHER]).choices[0].message
        chunks = list(oai.chat.completions.create(model=model, messages=messages, tools=[CHAT_WEATHER], stream=True))
        deltas = [c.choices[0].delta for c in chunks if c.choices]
        calls = [t for d in deltas for t in (d.tool_calls or [])]
        content = "".join(d.content or "" for d in deltas)
        return type("Message", (), {"tool_calls": calls, "content": content})

    first = chat(ask)
    [call] = first.tool_calls
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    dropped = {"id": call.id, "type": "function", "function": {"name": call.function.name, "arguments": call.function.arguments}}
    follow_up = ask + [
        {"role": "assistant", "content": None, "tool_calls": [dropped]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"},
    ]
    second = chat(follow_up)
    assert "sunny, 21 C" in second.content and "(reasoning kept)" in second.content, second.content
    # Google got the signature it gave, not a placeholder.
    sent = [r["body"] for r in fake.requests() if r["path"] == "/v1beta/openai/chat/completions"][-1]
    signature = sent["messages"][1]["tool_calls"][0]["extra_content"]["google"]["thought_signature"]
    assert signature.startswith("EtYDCtMDAdHtim"), signature
    assert_upstream_saw_only_pool_keys(fake, "/v1beta/openai/chat/completions")


def test_openai_chat_client_that_keeps_extra_content_keeps_control(oai, fake):
    model = "gemini-3-flash-preview"
    ask = [{"role": "user", "content": 'Please CALL get_weather {"city": "Oslo"}'}]
    first = oai.chat.completions.create(model=model, messages=ask, tools=[CHAT_WEATHER]).choices[0].message
    kept = first.model_dump(exclude_none=True)
    assert kept["tool_calls"][0]["extra_content"]["google"]["thought_signature"]
    # A client that sends its own (here Google's placeholder) is left alone.
    kept["tool_calls"][0]["extra_content"]["google"]["thought_signature"] = "skip_thought_signature_validator"
    follow_up = ask + [kept, {"role": "tool", "tool_call_id": kept["tool_calls"][0]["id"], "content": "snow"}]
    second = oai.chat.completions.create(model=model, messages=follow_up, tools=[CHAT_WEATHER]).choices[0].message
    assert "(reasoning lost)" in second.content, second.content


def test_openai_embeddings_float_and_base64(oai, fake):
    r = oai.embeddings.create(model="gemini-embedding-001", input=["a", "b"], encoding_format="float")
    assert len(r.data) == 2 and r.data[0].embedding[1] == -0.5
    r = oai.embeddings.create(model="gemini-embedding-001", input="a")  # the SDK asks for base64 and decodes it
    assert r.data[0].embedding[1] == -0.5
    assert_upstream_saw_only_pool_keys(fake, "/v1beta/openai/embeddings")


def test_openai_models(oai, fake):
    ids = [m.id for m in oai.models.list()]
    assert "models/gemini-2.5-flash" in ids
    assert_upstream_saw_only_pool_keys(fake, "/v1beta/openai/models")


@pytest.fixture(params=[None, "v1beta"], ids=["sdk-default-version", "v1beta"])
def gclient(request, stack):
    opts = {"base_url": stack["url"]}
    if request.param:
        opts["api_version"] = request.param
    return genai.Client(api_key=PROXY_KEY, http_options=types.HttpOptions(**opts))


def test_genai_generate(gclient, fake):
    r = gclient.models.generate_content(model=MODEL, contents="hi")
    assert r.text == f"Hello from the fake {MODEL}."
    assert_upstream_saw_only_pool_keys(fake, "/v1beta/models/")


def test_genai_generate_stream(gclient, fake):
    text = "".join(c.text or "" for c in gclient.models.generate_content_stream(model=MODEL, contents="hi"))
    assert text == "chunk 0 chunk 1 chunk 2 "
    assert_upstream_saw_only_pool_keys(fake, "/v1beta/models/")


def test_genai_count_tokens(gclient, fake):
    assert gclient.models.count_tokens(model=MODEL, contents="hi").total_tokens == 7
    assert_upstream_saw_only_pool_keys(fake, "/v1beta/models/")


def test_genai_embed(gclient, fake):
    r = gclient.models.embed_content(model="gemini-embedding-001", contents=["a", "b"])
    assert len(r.embeddings) == 2 and r.embeddings[0].values[1] == -0.5
    assert_upstream_saw_only_pool_keys(fake, "/v1beta/models/")


def test_genai_models(gclient, fake):
    names = [m.name for m in gclient.models.list()]
    assert "models/gemini-2.5-flash" in names
    assert_upstream_saw_only_pool_keys(fake, "/v1beta/models")


def test_genai_files_upload_then_generate_lands_on_the_owning_key(gclient, fake, tmp_path):
    # A multi-MB file, uploaded in Google's resumable protocol: the start and
    # every chunk go through the proxy (the upload URL it hands out is its
    # own, with no key in it), all to the key that started the upload.
    before = len(fake.requests())
    path = tmp_path / "report.txt"
    path.write_bytes(b"gemini-proxy " * (3 * 1024 * 1024 // 13))
    doc = gclient.files.upload(file=str(path), config={"mime_type": "text/plain"})
    assert doc.name.startswith("files/") and doc.size_bytes == path.stat().st_size
    reqs = fake.requests()[before:]
    uploads = [r for r in reqs if r["path"].startswith("/upload/")]
    assert len(uploads) >= 2, "a start and at least one chunk"
    owner = uploads[0]["credentials"][0][1]
    assert owner in POOL_KEYS
    assert [[key for _, key in r["credentials"]] for r in uploads] == [[owner]] * len(uploads), uploads
    # The prompt that names it goes to its owner at once: the proxy saw the
    # upload create it.
    for _ in range(3):
        r = gclient.models.generate_content(model=MODEL, contents=[doc, "summarise"])
        assert r.text == f"Hello from the fake {MODEL}."
    generated = [r for r in fake.requests()[before:] if r["path"].endswith(":generateContent")]
    assert [r["credentials"][0][1] for r in generated] == [owner] * 3, generated
    assert gclient.files.get(name=doc.name).name == doc.name
    assert fake.requests()[-1]["credentials"][0][1] == owner


def test_genai_two_files_and_a_cache_each_land_on_their_owner(gclient, fake, tmp_path):
    # Two files uploaded on different calls, then used in one prompt: they
    # may belong to two keys (a clear 400) or to one (its key serves).
    paths = []
    for i in range(2):
        p = tmp_path / f"part{i}.txt"
        p.write_bytes(b"part %d " % i * 1000)
        paths.append(p)
    docs, owners = [], []
    for p in paths:
        before = len(fake.requests())
        docs.append(gclient.files.upload(file=str(p), config={"mime_type": "text/plain"}))
        owners.append(fake.requests()[before]["credentials"][0][1])
    before = len(fake.requests())
    if owners[0] == owners[1]:
        r = gclient.models.generate_content(model=MODEL, contents=[docs[0], docs[1], "compare"])
        assert r.text == f"Hello from the fake {MODEL}."
        assert [q["credentials"][0][1] for q in fake.requests()[before:]] == [owners[0]]
    else:
        with pytest.raises(genai.errors.ClientError) as e:
            gclient.models.generate_content(model=MODEL, contents=[docs[0], docs[1], "compare"])
        assert e.value.code == 400 and docs[0].name in str(e.value) and docs[1].name in str(e.value)
        assert fake.requests()[before:] == [], "nothing sent"

    # caches.create, then generate with the cache: every prompt on the key
    # that made it, with no search across the pool.
    cache = gclient.caches.create(
        model=MODEL,
        config=types.CreateCachedContentConfig(
            contents=[types.Content(role="user", parts=[types.Part(text="a long context " * 50)])], ttl="300s"
        ),
    )
    assert cache.name.startswith("cachedContents/")
    maker = fake.requests()[-1]["credentials"][0][1]
    before = len(fake.requests())
    for _ in range(3):
        r = gclient.models.generate_content(
            model=MODEL, contents="and so?", config=types.GenerateContentConfig(cached_content=cache.name)
        )
        assert r.text == f"Hello from the fake {MODEL}."
    assert [q["credentials"][0][1] for q in fake.requests()[before:]] == [maker] * 3
    assert gclient.caches.get(name=cache.name).name == cache.name
    assert fake.requests()[-1]["credentials"][0][1] == maker


def _keys(reqs):
    return [r["credentials"][0][1] for r in reqs]


def test_genai_batch_create_then_get_on_its_maker(gclient, fake):
    # A batch job belongs to the key that made it: its polling goes there.
    # Three jobs, so that their makers are not all the key a search of the
    # pool would ask first.
    jobs, makers = [], []
    for n in range(3):
        before = len(fake.requests())
        job = gclient.batches.create(
            model=MODEL,
            src=[
                types.InlinedRequest(contents=[types.Content(role="user", parts=[types.Part(text=f"q{i}")])])
                for i in range(n + 1)
            ],
        )
        assert job.name.startswith("batches/") and job.state == types.JobState.JOB_STATE_PENDING
        made = fake.requests()[before:]
        assert [r["path"].rsplit(":", 1)[-1] for r in made] == ["batchGenerateContent"]
        jobs.append(job)
        makers += _keys(made)
    assert set(makers) <= set(POOL_KEYS) and len(set(makers)) > 1, makers
    # Polled last first: a ring that turns as it did for the creates would
    # not meet each maker again by chance.
    for job, maker, n in reversed(list(zip(jobs, makers, range(1, 4)))):
        before = len(fake.requests())
        for _ in range(2):
            got = gclient.batches.get(name=job.name)
            assert got.state == types.JobState.JOB_STATE_SUCCEEDED
            assert [r.response.text for r in got.dest.inlined_responses] == [f"Hello from the fake {MODEL}."] * n
        assert _keys(fake.requests()[before:]) == [maker] * 2, "every poll on the maker, none searched"


def test_genai_lists_merge_every_keys_files_caches_and_batches(gclient, fake, tmp_path):
    # Files, caches and batches made on several keys: each list shows the
    # pool's, paged by the SDK's own pager across the keys.
    files, caches, batches = [], [], []
    for i in range(7):
        p = tmp_path / f"doc{i}.txt"
        p.write_bytes(b"doc %d " % i * 100)
        files.append(gclient.files.upload(file=str(p), config={"mime_type": "text/plain"}).name)
    for i in range(3):
        config = types.CreateCachedContentConfig(
            contents=[types.Content(role="user", parts=[types.Part(text=f"context {i} " * 50)])], ttl="300s"
        )
        caches.append(gclient.caches.create(model=MODEL, config=config).name)
        src = [types.InlinedRequest(contents=[types.Content(role="user", parts=[types.Part(text=f"q{i}")])])]
        batches.append(gclient.batches.create(model=MODEL, src=src).name)
    made = fake.requests()
    makers = {r["credentials"][0][1] for r in made if r["path"].startswith("/upload/")}
    assert len(makers) > 1, "the files are spread over the keys"

    for page_size in (1, 2, 3, 10):
        before = len(fake.requests())
        listed = [f.name for f in gclient.files.list(config={"page_size": page_size})]
        assert sorted(listed) == sorted(files), (page_size, listed)
        asked = fake.requests()[before:]
        assert {r["path"].split("/", 2)[-1] for r in asked} == {"files"}
        assert _keys(asked) and set(_keys(asked)) <= set(POOL_KEYS)
        assert len(set(_keys(asked))) == len(POOL_KEYS), "every key's list was read"
        for r in asked:
            size = int(dict(q.split("=", 1) for q in r["query"].split("&"))["pageSize"])
            assert 1 <= size <= page_size, r
    assert sorted(c.name for c in gclient.caches.list(config={"page_size": 2})) == sorted(caches)
    assert sorted(b.name for b in gclient.batches.list(config={"page_size": 2})) == sorted(batches)
    # A page the SDK did not get from the proxy is refused, clearly.
    with pytest.raises(genai.errors.ClientError) as e:
        gclient.files.list(config={"page_size": 2, "page_token": "CgZmaWxlcy8"})
    assert e.value.code == 400 and "pageToken" in str(e.value)


def test_genai_interactions_plain_streamed_and_followed_up_on_their_owner(gclient, fake):
    before = len(fake.requests())
    first = gclient.interactions.create(model=MODEL, input="hi")
    assert first.id and first.output_text == f"Hello from the fake {MODEL}."
    owner = _keys(fake.requests()[before:])[0]
    assert owner in POOL_KEYS

    # Streamed: the events come as Google sends them, the first naming the
    # new interaction.
    before = len(fake.requests())
    events = list(gclient.interactions.create(model=MODEL, input="and?", stream=True))
    kinds = [e.event_type for e in events]
    assert kinds[0] == "interaction.created" and kinds[-1] == "interaction.completed", kinds
    text = "".join(e.delta.text for e in events if e.event_type == "step.delta")
    assert text == f"Hello from the fake {MODEL}."
    streamed = events[0].interaction.id
    streamer = _keys(fake.requests()[before:])[0]

    # Follow-ups with previous_interaction_id go to the interaction's owner,
    # whichever key the ring would have chosen.
    for prev, key in [(first.id, owner), (streamed, streamer), (first.id, owner)]:
        before = len(fake.requests())
        more = gclient.interactions.create(model=MODEL, input="more", previous_interaction_id=prev)
        assert more.output_text == f"Hello from the fake {MODEL}."
        assert _keys(fake.requests()[before:]) == [key], (prev, fake.requests()[before:])
    before = len(fake.requests())
    assert gclient.interactions.get(first.id).id == first.id
    assert _keys(fake.requests()[before:]) == [owner]


def test_openai_files_and_batches_stay_on_the_key_that_made_them(oai, fake, tmp_path):
    # Google's OpenAI-compatible Batch API: a JSONL file uploaded with
    # files.create, a batch of it, then the batch and the file polled. The
    # ids are Google names (`files/…`, `batches/…`), which the SDK escapes
    # in its paths (`/batches/batches%2F…`). Three rounds, so that the
    # makers are not all the key a search of the pool would ask first.
    lines = tmp_path / "batch.jsonl"
    lines.write_text(
        '{"custom_id": "r1", "method": "POST", "url": "/v1/chat/completions", '
        f'"body": {{"model": "{MODEL}", "messages": [{{"role": "user", "content": "hi"}}]}}}}\n'
    )
    made = []
    for _ in range(3):
        # A file more than batches, so that the rings of the two do not
        # meet the file's key by chance.
        with lines.open("rb") as f:
            oai.files.create(file=f, purpose="batch")
        before = len(fake.requests())
        with lines.open("rb") as f:
            file = oai.files.create(file=f, purpose="batch")
        assert file.id.startswith("files/"), file
        batch = oai.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h")
        assert batch.id.startswith("batches/") and batch.input_file_id == file.id, batch
        maker = _keys(fake.requests()[before:])
        assert len(set(maker)) == 1, f"the batch went to another key than its file: {maker}"
        made.append((file, batch, maker[0]))
    assert len({m for _, _, m in made}) > 1, made
    for file, batch, maker in reversed(made):
        before = len(fake.requests())
        assert oai.batches.retrieve(batch.id).id == batch.id
        assert oai.files.retrieve(file.id).id == file.id
        seen = fake.requests()[before:]
        assert _keys(seen) == [maker] * 2, "every call on the maker, none searched"
        assert seen[0]["path"] == "/v1beta/openai/batches/" + batch.id.replace("/", "%2F"), "relayed as the SDK sent it"
