"""Open every page of the built site in headless Chromium, as a reader would, and fail on
what a reader would see broken.

    python docs/check_site.py docs/_build/html [--screenshots DIR]

The site is served on 127.0.0.1 (a thread of this process) and every ``*.html`` under it
is loaded by Debian's Chromium driven by Playwright (``pip install playwright``; no
browser download: ``--chromium`` names the system's). A page fails when it does not load
(HTTP error, JavaScript exception), when a resource it asks for fails (a 404, a console
"Failed to load resource", any request off the local server: the site must work
offline), when an image has not rendered (``naturalWidth == 0``), or when math is not
typeset (an element of class ``math`` without MathJax's ``mjx-container``, or ``\\(``,
``\\[`` or ``$$`` left in the visible text outside code). Exit status 1 lists the failures.
``--screenshots DIR`` also writes ``landing.png`` (the index) and ``tutorial.png``
(the first tutorial).
"""

from __future__ import annotations

import argparse
import functools
import sys
import threading
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

#: Chromium on a closed network: without the background-networking flags it waits on
#: requests (component updates, sync, QUIC probes) that never answer.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 # Nothing leaves the machine: every host but the local server fails at once.
                 "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]
SCREENSHOTS = {"landing.png": "index.html", "tutorial.png": "_generated/tutorials/01_vae.html"}
SHOW_MATH = "() => document.querySelector('div.math')?.scrollIntoView({block: 'center'})"  # for the shot

# Runs in the page once it has loaded: waits for MathJax's typesetting and for every
# image, then reports what did not render.
INSPECT = """async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) { await MathJax.startup.promise; }
  await document.fonts.ready;  // MathJax's fonts load after typesetting
  const images = [...document.images];
  await Promise.all(images.map(img => img.complete ? null : new Promise(done => {
    img.addEventListener('load', done); img.addEventListener('error', done); setTimeout(done, 5000);
  })));
  const math = [...document.querySelectorAll('.math')];
  const raw = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT, {acceptNode: node =>
    node.parentElement.closest('pre, code, script, style, textarea, mjx-container, .highlight')
      ? NodeFilter.FILTER_REJECT : NodeFilter.FILTER_ACCEPT});
  for (let node; (node = walker.nextNode());) {
    for (const tex of ['\\\\(', '\\\\[', '$$']) {
      if (node.textContent.includes(tex)) { raw.push(node.textContent.trim().slice(0, 80)); break; }
    }
  }
  return {
    images: images.length,
    broken_images: images.filter(img => img.naturalWidth === 0).map(img => img.getAttribute('src')),
    math: math.length,
    untypeset: math.filter(el => !el.querySelector('mjx-container')).map(el => el.textContent.trim().slice(0, 80)),
    raw_tex: raw,
  };
}"""


@dataclass
class Report:
    pages: int = 0
    images: int = 0
    math: int = 0
    failures: dict[str, list[str]] = field(default_factory=dict)

    def summary(self) -> str:
        return (f"checked {self.pages} pages: {self.images} images, {self.math} math elements; "
                f"{len(self.failures)} pages with problems")


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        if self.path == "/favicon.ico":  # the browser asks for one; the site has none
            self.send_response(204)
            self.end_headers()
        else:
            super().do_GET()


def serve(root: Path) -> ThreadingHTTPServer:
    """An HTTP server of ``root`` on 127.0.0.1 (a free port), running in a daemon thread."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def pages(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.html"))


def check(root: Path, chromium: str = "/usr/bin/chromium", screenshots: Path | None = None,
          only: list[str] | None = None) -> Report:
    """Load every page of the site under ``root`` (or the relative paths ``only``)."""
    from playwright.sync_api import sync_playwright

    report = Report()
    server = serve(root)
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            problems: list[str] = []

            def on_request(request) -> None:
                if not request.url.startswith(base) and urlsplit(request.url).scheme in ("http", "https"):
                    problems.append(f"requests {request.url} (off the site: fails offline)")

            page.on("request", on_request)
            # A request the next navigation cancels (net::ERR_ABORTED) is not the page's failure.
            page.on("requestfailed", lambda r: r.url.startswith(base) and "ERR_ABORTED" not in (r.failure or "")
                    and problems.append(f"failed to load {r.url} ({r.failure})"))
            page.on("response", lambda r: r.status >= 400 and problems.append(f"HTTP {r.status} for {r.url}"))
            page.on("pageerror", lambda e: problems.append(f"JavaScript error: {e}"))
            page.on("console", lambda m: m.type == "error" and problems.append(f"console: {m.text}"))

            for path in only or pages(root):
                problems.clear()
                try:
                    response = page.goto(base + path, wait_until="load", timeout=30000)
                    if response is None or not response.ok:
                        problems.append(f"page load: HTTP {response.status if response else '?'}")
                    found = page.evaluate(INSPECT)
                except Exception as error:  # a page that times out or crashes the tab
                    problems.append(f"did not load: {error}".splitlines()[0])
                    found = {"images": 0, "broken_images": [], "math": 0, "untypeset": [], "raw_tex": []}
                problems += [f"image not rendered: {src}" for src in found["broken_images"]]
                problems += [f"math not typeset: {text!r}" for text in found["untypeset"]]
                problems += [f"raw TeX in the text: {text!r}" for text in found["raw_tex"]]
                report.pages += 1
                report.images += found["images"]
                report.math += found["math"]
                if problems:
                    report.failures[path] = list(dict.fromkeys(problems))
                for name, target in SCREENSHOTS.items():
                    if screenshots is not None and path == target:
                        screenshots.mkdir(parents=True, exist_ok=True)
                        page.evaluate(SHOW_MATH)
                        page.screenshot(path=str(screenshots / name))
            browser.close()
    finally:
        server.shutdown()
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("site", type=Path, help="the built HTML folder (docs/_build/html)")
    parser.add_argument("--chromium", default="/usr/bin/chromium", help="the browser executable")
    parser.add_argument("--screenshots", type=Path, help="write landing.png and tutorial.png here")
    args = parser.parse_args(argv)
    report = check(args.site, args.chromium, args.screenshots)
    for path, problems in report.failures.items():
        print(f"{path}:", *(f"  {p}" for p in problems), sep="\n")
    print(report.summary())
    return 1 if report.failures or report.pages == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
