"""The web page end to end in headless Chromium (Debian's browser driven by Playwright): upload an
image, ask, see the streamed answer. A screenshot is kept in out/test-artifacts/."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from vrm.tasks import get_task

ARTIFACTS = Path(__file__).resolve().parent.parent / "out" / "test-artifacts"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


def chromium() -> str:
    """Debian's Chromium, installed on the spot when we may (root with apt-get); else skip."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("no chromium on this machine and no root apt-get to install it (apt-get install chromium)")
    for cmd in (["apt-get", "install", "-y", "-q", "chromium"], ["apt-get", "update", "-q"],
                ["apt-get", "install", "-y", "-q", "chromium"]):
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=900,
                              env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        if cmd[1] == "install" and done.returncode == 0 and shutil.which("chromium"):
            return shutil.which("chromium")
    pytest.skip(f"could not install chromium with apt-get: {done.stderr.strip().splitlines()[-1:]}")


def test_page_answers_an_uploaded_image(server, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (the test extra) is not installed")
    executable = chromium()
    base, _ = server
    sample = get_task("shapes", families=("count_all",)).sample(9_000_021)
    image = tmp_path / "shapes.png"
    sample.image.save(image)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page()
            page.goto(base + "/")
            page.wait_for_function("document.getElementById('format').options.length > 0")
            page.set_input_files("#file", str(image))
            page.wait_for_function("document.getElementById('preview').naturalWidth === 64")
            page.fill("#question", sample.question)
            page.click("#go")
            page.wait_for_function("document.getElementById('meta').textContent.startsWith('answered')", timeout=60_000)
            answer = page.inner_text("#answer").strip()
            assert page.inner_text("#error") == ""
            page.screenshot(path=str(ARTIFACTS / "web-answer.png"), full_page=True)

            # a bad upload is refused on the page, not by a broken request
            page.set_input_files("#file", {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"hello"})
            assert "not an image" in page.inner_text("#error")
        finally:
            browser.close()
    assert answer == sample.answer  # the embedded model counts all shapes right
