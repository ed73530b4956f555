"""A real headless Chromium for the report tests, and a small DOM of what it rendered.

Every Chromium run here is kept on this machine: its proxy is a loopback port nothing listens
on and its host resolver answers nothing, so the browser's own background requests (update
checks, which ``--disable-background-networking`` does not stop) go nowhere. Its network log
(``--log-net-log``) records every request it started and who asked: the page's requests carry
the page's origin as ``initiator`` (``"null"`` for a ``file://`` page), the browser's own carry
``"not an origin"``.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import socket
import subprocess
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pytest

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}


def chromium_binary() -> str:
    """The Chromium binary, or skip the test saying that none is installed."""
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("no chromium binary (Debian: apt-get install chromium; .ci/run installs it)")


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_chromium(url: str, *args: str, netlog: Path | None = None, timeout: float = 120) -> str:
    """Run headless Chromium on ``url`` with ``args`` (``--dump-dom``, ``--screenshot=…``);
    return its stdout."""
    cmd = [
        chromium_binary(),
        "--headless",
        "--disable-gpu",
        "--no-sandbox",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        f"--proxy-server=127.0.0.1:{_dead_port()}",
        "--proxy-bypass-list=<-loopback>",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--hide-scrollbars",
    ]
    if netlog is not None:
        cmd.append(f"--log-net-log={netlog}")
    proc = subprocess.run(
        [*cmd, *args, url], capture_output=True, text=True, timeout=timeout, check=False
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def page_requests(netlog: Path) -> list[str]:
    """The URLs that the page itself asked for (not the browser's own requests)."""
    log = json.loads(netlog.read_text())
    types = {v: k for k, v in log["constants"]["logEventTypes"].items()}
    urls = []
    for event in log["events"]:
        params = event.get("params") or {}
        if types.get(event["type"]) == "URL_REQUEST_START_JOB" and params.get("url"):
            if params.get("initiator") != "not an origin":
                urls.append(params["url"])
    return urls


# ----------------------------------------------------------------------------- a small DOM
@dataclass
class Node:
    tag: str
    attrs: dict[str, str]
    children: list[Node] = field(default_factory=list)
    parts: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        """All text under this element."""
        return "".join(self.parts) + "".join(c.text for c in self.children)

    def iter(self, tag: str | None = None):
        """This element and every element under it (of ``tag`` when given), in order."""
        if tag is None or self.tag == tag:
            yield self
        for child in self.children:
            yield from child.iter(tag)

    def find_all(self, tag: str | None = None, **attrs: str) -> list[Node]:
        """Elements under this one with ``tag`` whose attributes have the values given
        (``class_`` stands for ``class``; a class matches one of the element's classes)."""
        wanted = {k.rstrip("_").replace("_", "-"): v for k, v in attrs.items()}
        out = []
        for node in self.iter(tag):
            ok = True
            for key, value in wanted.items():
                have = node.attrs.get(key)
                if key == "class":
                    ok = ok and have is not None and value in have.split()
                else:
                    ok = ok and have == value
            if ok:
                out.append(node)
        return out

    def by_id(self, element_id: str) -> Node:
        found = self.find_all(id=element_id)
        assert len(found) == 1, f"{len(found)} elements with id {element_id!r}"
        return found[0]


class _Builder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.stack[-1].children.append(Node(tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag: str) -> None:
        for depth in range(len(self.stack) - 1, 0, -1):
            if self.stack[depth].tag == tag:
                del self.stack[depth:]
                return

    def handle_data(self, data: str) -> None:
        self.stack[-1].parts.append(data)


def parse_dom(markup: str) -> Node:
    """The element tree of ``markup`` (Chromium's ``--dump-dom`` output)."""
    builder = _Builder()
    builder.feed(markup)
    builder.close()
    return builder.root


def table_numbers(table: Node, key: str) -> dict[str, dict[str, int]]:
    """The numbers of a report table: ``{row's data-<key>: {cell's data-column: number}}``."""
    return {
        row.attrs[f"data-{key}"]: {
            td.attrs["data-column"]: int(td.text)
            for td in row.find_all("td")
            if "data-column" in td.attrs
        }
        for row in table.find_all("tr")
        if f"data-{key}" in row.attrs
    }


def decode_data_uri(src: str):
    """The image a ``data:image/...;base64,`` URI holds, opened (and fully decoded) by Pillow."""
    from PIL import Image

    head, _, payload = src.partition(",")
    assert head.startswith("data:image/") and head.endswith(";base64"), head[:40]
    img = Image.open(io.BytesIO(base64.b64decode(payload, validate=True)))
    img.load()
    return img
