"""The live dashboard in a real headless chromium, fed by ``live.py --web`` runs of the shipped model.

What the page shows is checked against the events the same run wrote with ``--events``, not against
numbers written here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from .conftest import DEMO, ROOT, LiveRun, docs_image, poll_count

pytestmark = pytest.mark.slow


def read_events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def console_errors(page: Any) -> list[str]:
    """Console errors and uncaught exceptions of a page (a CSP violation by the page itself shows here)."""
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    return errors


def test_demo_replay_streams_to_the_page_and_a_late_page_catches_up(browser: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    log = tmp_path / "events.jsonl"
    with LiveRun("--replay", str(DEMO), "--speed", "3", "--events", str(log)) as run:
        ctx = browser.new_context(viewport={"width": 1440, "height": 1000})
        first = ctx.new_page()
        errors = console_errors(first)
        first.goto(run.url)
        rows = first.locator("#transcript li.utt")
        seen = poll_count(rows, 3)
        assert seen < 11, "the replay was over before the second page opened: not a mid-session test"
        late = ctx.new_page()
        errors += console_errors(late)
        late.goto(run.url)
        # u0001 was emitted before this page existed: only the server's history can have put it there
        expect(late.locator('#transcript li[data-utterance="u0001"]')).to_have_count(1, timeout=10_000)
        assert poll_count(late.locator("#transcript li.utt"), seen, timeout_s=10) >= seen

        run.wait_for("analysis finished")
        events = read_events(log)
        emotions = [e for e in events if e["type"] == "emotion"]
        shifts = [e for e in events if e["type"] == "shift"]
        speakers = list(dict.fromkeys(e["speaker"] for e in emotions))
        assert len(emotions) == 11 and shifts and len(speakers) == 3
        for page in (first, late):
            expect(page.locator("#transcript li.utt")).to_have_count(11, timeout=20_000)
            assert page.locator("#transcript li.utt .text").all_inner_texts() == [e["text"] for e in emotions]
            assert page.locator("#transcript li.utt .chip").all_inner_texts() == [e["expression"] for e in emotions]
            expect(page.locator("#alerts li.alert")).to_have_count(len(shifts))
            alerts = page.locator("#alerts li.alert").all_inner_texts()[::-1]  # newest first on the page
            for text, sh in zip(alerts, shifts, strict=True):
                assert sh["speaker"] in text and sh["from"] in text and sh["to"] in text
            expect(page.locator("svg.timeline")).to_have_count(len(speakers))
            for spk in speakers:
                tl = page.locator(f'svg.timeline[data-speaker="{spk}"]')
                expect(tl.locator("circle.point")).to_have_count(sum(e["speaker"] == spk for e in emotions))
                expect(tl.locator("g.shift-marker")).to_have_count(sum(s["speaker"] == spk for s in shifts))
                expect(tl.locator("polyline.valence")).to_have_count(1)
            expect(page.locator("#speakers .speaker")).to_have_count(len(speakers))
            expect(page.locator("#figures")).to_contain_text("sink.web=")  # the queue depths the TUI shows
            expect(page.locator("#figures")).not_to_contain_text("p50–")
            expect(page.locator("#conn")).to_have_text("analysis finished")
        shot = docs_image("dashboard.png", tmp_path)
        first.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 20_000
        ctx.close()
        assert errors == []
        assert run.stop() == 0


def test_untrusted_text_is_shown_as_text_and_never_runs(browser: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    lines = ['<b>Eve</b>: <script>window.__pwned = 1</script> hello everyone',
             'Mallory: <img src=x onerror="window.__pwned = 2"> look at this',
             '<script>window.__pwned = 3</script> a line without a speaker']
    script = tmp_path / "meeting.txt"
    script.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with LiveRun("--transcript", str(script), "--speed", "0", "--session", "<i>room</i>") as run:
        run.wait_for("analysis finished")
        # even with the Content-Security-Policy bypassed, the page's own rendering must not run the text
        ctx = browser.new_context(bypass_csp=True)
        page = ctx.new_page()
        page.goto(run.url)
        expect(page.locator("#transcript li.utt")).to_have_count(2, timeout=20_000)
        assert page.locator("#transcript li.utt .text").all_inner_texts() == [
            "<script>window.__pwned = 1</script> hello everyone",
            '<img src=x onerror="window.__pwned = 2"> look at this']
        assert page.locator("#transcript li.utt .who").all_inner_texts() == ["<b>Eve</b>", "Mallory"]
        expect(page.locator("#sessions .tab .name")).to_have_text(["<i>room</i>"])
        expect(page.locator("#problems li.problem")).to_have_count(1)
        expect(page.locator("#problems li.problem")).to_contain_text("<script>window.__pwned = 3</script>")
        assert page.locator("main script, main img, main b, main i").count() == 0
        assert page.evaluate("() => window.__pwned") is None
        ctx.close()
        assert run.stop() == 0


def test_several_sessions_each_get_a_tab_behind_a_token(browser: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    token = "a-token-of-the-right-length"
    with LiveRun("--replay", str(DEMO), "--replay", str(DEMO), "--speed", "0",
                 env={"PCGNET_WEB_TOKEN": token}) as run:
        run.wait_for("analysis finished")
        page = browser.new_page()
        assert page.goto(run.url).status == 401
        page.goto(run.url + "?token=" + token)  # sets the cookie the page's event stream then carries
        assert page.url == run.url  # the token does not stay in the address bar
        tabs = page.locator("#sessions .tab")
        expect(tabs.locator(".name")).to_have_text(["demo", "demo#2"], timeout=20_000)
        expect(page.locator("#transcript li.utt")).to_have_count(11)
        tabs.nth(1).click()
        expect(page.locator("#session")).to_have_attribute("data-session", "demo#2")
        expect(page.locator("#transcript li.utt")).to_have_count(11)
        expect(page.locator("svg.timeline")).to_have_count(3)
        page.close()
        assert run.stop() == 0


@pytest.mark.parametrize("web,env,expect_text", [
    ("0.0.0.0:0", {}, "without a token"),
    ("0.0.0.0:0", {"PCGNET_WEB_TOKEN": "short"}, "at least 16"),
])
def test_non_loopback_bind_without_a_good_token_is_refused(web: str, env: dict[str, str], expect_text: str) -> None:
    with LiveRun("--replay", str(DEMO), "--speed", "0", web=web, env=env) as run:
        assert run.wait(60) == 2
    assert len(run.stderr) == 1, run.stderr  # one clear line, no traceback
    assert run.stderr[0].startswith("live.py: error: --web:") and expect_text in run.stderr[0]


def test_the_page_loads_nothing_from_elsewhere() -> None:
    """The page names only its own two files: no CDN, font or image from the network."""
    html = (ROOT / "stream" / "web" / "static" / "index.html").read_text(encoding="utf-8")
    for needle in ("http://", "https://", "//cdn", "<style", "onload=", "onclick="):
        assert needle not in html
    js = (ROOT / "stream" / "web" / "static" / "app.js").read_text(encoding="utf-8")
    assert "innerHTML" not in js and "insertAdjacentHTML" not in js and "eval(" not in js


def test_a_busy_port_is_one_clear_error() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with LiveRun("--replay", str(DEMO), "--speed", "0", web=f"127.0.0.1:{s.getsockname()[1]}") as run:
            assert run.wait(120) == 2
    assert len(run.stderr) == 1 and "cannot listen" in run.stderr[0], run.stderr
