"""The candidate server and the stub chat API of CD-05's browser check, over real HTTP."""

from __future__ import annotations

import httpx

from mangaassist.delivery.frontend.serve import STUB_ANSWER, STUB_SOURCES, CandidateServer, StubChatbot
from mangaassist.platform.static_site import release_id

FILES = {
    "index.html": b"<!doctype html><script src=./loader.js></script>",
    "loader.js": b"import('./assets/w-1a.js')",
    "assets/w-1a.js": b"export const w = 1;",
}


def test_a_candidate_is_served_at_its_channel_path_as_the_edge_serves_it() -> None:
    with StubChatbot() as stub, CandidateServer(FILES, api=stub.url, prefix="/previews/feat-x/") as server:
        assert server.page_url == server.url + "/previews/feat-x/"
        with httpx.Client(base_url=server.url, timeout=5) as http:
            page = http.get("/previews/feat-x/")
            assert page.status_code == 200 and page.content == FILES["index.html"]
            assert page.headers["Cache-Control"] == "no-cache"
            assert page.headers["X-MangaAssist-Release"] == release_id(FILES)
            assert page.headers["Content-Type"].startswith("text/html")
            asset = http.get("/previews/feat-x/assets/w-1a.js")
            assert asset.headers["Cache-Control"] == "public, max-age=31536000, immutable"
            assert asset.headers["Content-Type"] == "application/javascript"
            assert http.get("/loader.js").status_code == 404  # outside the channel's path
            assert http.get("/previews/feat-x/assets/nope.js").status_code == 404

            chat = http.post("/v1/chat", json={"session_id": "s-1", "message": "returns?"})
            assert chat.status_code == 200 and chat.headers["X-MangaAssist-Revision"] == "stub"
            body = chat.json()
            assert body["answer"] == STUB_ANSWER and body["sources"] == list(STUB_SOURCES)
            assert body["session_id"] == "s-1"
            assert http.post("/v1/feedback", json={"session_id": "s-1", "rating": "up"}).json() == {
                "ok": True
            }
        assert stub.chats == 1


def test_a_chat_api_that_is_down_is_a_502_not_a_hang() -> None:
    stub = StubChatbot()
    api = stub.url
    stub.close()
    with CandidateServer(FILES, api=api) as server:
        answer = httpx.post(server.url + "/v1/chat", json={"message": "hi"}, timeout=10)
        assert answer.status_code == 502 and "cannot be reached" in answer.text
