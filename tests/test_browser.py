"""The real thing: start the Streamlit server, open the attention page in headless Chromium
(driven over the DevTools protocol), wait until the plotly heatmaps are drawn, and save a
screenshot into the test's tmp dir.

Needs Debian's ``chromium`` (``.ci/run`` installs it); skipped with a reason otherwise.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from tests.serving import free_port, stop, streamlit_healthy, wait_for

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,2200",
    "--hide-scrollbars",
]
# The heatmap images plotly draws (one per head of the grid, plus the large pattern),
# the page title and any Streamlit exception box.
PROBE = """JSON.stringify({
  plots: document.querySelectorAll('.js-plotly-plot').length,
  svgs: document.querySelectorAll('.js-plotly-plot .main-svg').length,
  heatmaps: document.querySelectorAll('.js-plotly-plot g.hm image').length,
  text: document.body ? document.body.innerText : '',
  exceptions: document.querySelectorAll('[data-testid="stException"]').length,
  errors: document.querySelectorAll('[data-testid="stAlertContentError"]').length
})"""


def http_json(url: str):
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return json.loads(r.read())
    except (OSError, ValueError):
        return None


class DevTools:
    """A minimal Chrome DevTools Protocol client over one page's websocket."""

    def __init__(self, ws_url: str):
        from websockets.sync.client import connect  # a Streamlit dependency

        self.ws = connect(ws_url, max_size=64 * 2**20, open_timeout=10)
        self.next_id = 0

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:  # skip events until our reply
            msg = json.loads(self.ws.recv(timeout=30))
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]

    def evaluate(self, expression: str):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def close(self) -> None:
        self.ws.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The app served by ``python -m streamlit run apps/app.py`` on a free port."""
    port = free_port()
    log = tmp_path_factory.mktemp("server") / "streamlit.log"
    env = {
        **os.environ,
        "INTERP_DEFAULT_MODEL": "induction-2l",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streamlit",
                "run",
                str(ROOT / "apps" / "app.py"),
                "--server.port",
                str(port),
                "--server.headless",
                "true",
                "--browser.gatherUsageStats",
                "false",
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:

        def healthy():
            if proc.poll() is not None:
                raise AssertionError(f"streamlit exited with {proc.returncode}:\n{log.read_text()}")
            return streamlit_healthy(port)

        wait_for(healthy, 60, "the streamlit server")
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


@pytest.fixture()
def browser(tmp_path):
    """Headless Chromium with remote debugging; yields a DevTools client on its page."""
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install chromium; .ci/run installs it)")
    port = free_port()
    proc = subprocess.Popen(
        [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", f"--remote-debugging-port={port}", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        targets = wait_for(
            lambda: [t for t in http_json(f"http://127.0.0.1:{port}/json/list") or [] if t.get("type") == "page"],
            30,
            "chromium's debugging endpoint",
        )
        tools = DevTools(targets[0]["webSocketDebuggerUrl"])
        yield tools
        tools.close()
    finally:
        stop(proc)


def test_attention_heatmap_renders(server, browser, tmp_path):
    from PIL import Image

    browser.call("Page.enable")
    browser.call("Page.navigate", url=f"{server}/attention")
    # the first run loads the model (several seconds on a shared CPU); then 4 grid panels + 1 large
    state = wait_for(
        lambda: (lambda s: s if s and s["heatmaps"] >= 5 or s and s["exceptions"] else None)(
            json.loads(browser.evaluate(PROBE) or "null")
        ),
        120,
        "the attention heatmaps",
    )
    assert state["exceptions"] == 0 and state["errors"] == 0, state["text"][:2000]
    assert state["plots"] >= 2 and state["svgs"] >= 2
    assert "Attention patterns" in state["text"] and "L1H0" in state["text"]
    assert "Model: induction-2l" in state["text"]  # app.py ran (sidebar), not the page alone
    time.sleep(1.0)  # let the last figure finish its transition before the screenshot
    png = base64.b64decode(browser.call("Page.captureScreenshot", format="png")["data"])
    shot = tmp_path / "attention.png"
    shot.write_bytes(png)
    img = Image.open(io.BytesIO(png)).convert("RGB")
    assert img.size[0] >= 1000 and img.size[1] >= 1000
    # non-blank, and showing the blue heatmap colours (saturated blue pixels, many of them)
    colours = img.getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50
    blue = sum(n for n, (r, g, b) in colours if b - r > 30 and b >= g)
    assert blue > 0.005 * img.size[0] * img.size[1], f"few heatmap-blue pixels ({blue}); see {shot}"
    print(f"screenshot: {shot}")


# the URL path of each page (Streamlit derives it from the file name; the Model page is "/")
REAL_PAGES = {
    "": "Model",
    "attention": "Attention patterns",
    "heads": "Attention heads",
    "patching": "Activation patching",
    "circuit": "Circuit",
    "steering": "Steering",
    "lens": "Lens",
    "features": "Features",
}


@pytest.mark.slow  # minutes: every page computes its analysis on smollm2 (make test covers them with AppTest)
def test_every_page_renders_on_the_real_model(server, browser):
    """Each page opened from its URL with ``?model=smollm2-135m`` (a shared link, a reload) keeps that
    model, draws its figures and shows no exception or error box."""
    browser.call("Page.enable")
    for path, title in REAL_PAGES.items():
        browser.call("Page.navigate", url=f"{server}/{path}?model=smollm2-135m")

        def drawn(path=path, title=title):
            s = json.loads(browser.evaluate(PROBE) or "null")
            if s and (s["exceptions"] or s["errors"]):
                return s
            # running: Streamlit shows its status widget; done when the title and (for analysis pages) a figure are up
            running = browser.evaluate("!!document.querySelector('[data-testid=\"stStatusWidget\"]')")
            h1 = browser.evaluate("(document.querySelector('h1') || {}).innerText || ''")
            if (
                s
                and h1.startswith(title)
                and "Model: smollm2-135m" in s["text"]
                and (path == "" or s["svgs"] >= 1)
                and not running
            ):
                return s
            return None

        wait_for(drawn, 240, f"the {title} page on smollm2-135m")
        time.sleep(1.0)  # anything the page draws after its first figure
        state = json.loads(browser.evaluate(PROBE))
        assert state["exceptions"] == 0 and state["errors"] == 0, (path, state["text"][:2000])
        assert "Model: smollm2-135m" in state["text"], path
        assert "model=smollm2-135m" in browser.evaluate("window.location.search"), path


# the verdict box the Papers page shows after a run (one of the four verdicts, in bold)
VERDICT = """(() => {
  const t = document.body ? document.body.innerText : '';
  const m = t.match(/(not reproduced|reproduced|partial|not applicable) \\(\\d+ s\\)/);
  return m ? m[1] : null;
})()"""


RUN_IN_BROWSER = ("mcgrath2023", "sun2024")  # the two quickest: a causal finding and one from interp


@pytest.mark.reproduce
def test_papers_page_renders_every_finding(server, browser):
    """The Papers page opened from its URL for each published finding on smollm2-135m shows the
    finding's claim and published number with its Run button, no error box; Run (quick) on two of
    them (one causal, one from interp) draws the figure and a verdict.  (Every finding's run is
    checked by tests/test_reproduce_real.py and notebooks/07_reproduce.py in the same stage; running
    each again here would add minutes and test nothing new.)  Marked ``reproduce``."""
    import circuits.reproduce  # noqa: F401
    from interp import reproduce

    browser.call("Page.enable")
    for fid in reproduce.findings():
        browser.call("Page.navigate", url=f"{server}/papers?model=smollm2-135m&finding={fid}")

        def ready(fid=fid):
            s = json.loads(browser.evaluate(PROBE) or "null")
            if s and (s["exceptions"] or s["errors"]):
                return s
            found = browser.evaluate(
                "Array.from(document.querySelectorAll('button')).some(b => b.innerText.startsWith('Run " + fid + "'))"
            )
            return s if s and found and "Model: smollm2-135m" in s["text"] else None

        state = wait_for(ready, 240, f"the Papers page for {fid}")
        assert state["exceptions"] == 0 and state["errors"] == 0, (fid, state["text"][:2000])
        assert reproduce.get(fid).paper in state["text"], fid
        if fid not in RUN_IN_BROWSER:
            continue
        browser.evaluate(
            "Array.from(document.querySelectorAll('button')).find(b => b.innerText.startsWith('Run "
            + fid
            + "')).click()"
        )

        def done(fid=fid):
            s = json.loads(browser.evaluate(PROBE) or "null")
            if s and (s["exceptions"] or s["errors"]):
                return s
            running = browser.evaluate("!!document.querySelector('[data-testid=\"stStatusWidget\"]')")
            verdict = browser.evaluate(VERDICT)
            return s if s and verdict and s["svgs"] >= 1 and not running else None

        state = wait_for(done, 600, f"the run of {fid} on the Papers page")
        assert state["exceptions"] == 0 and state["errors"] == 0, (fid, state["text"][:2000])
        assert browser.evaluate(VERDICT) in reproduce.VERDICTS, fid
        assert f"finding={fid}" in browser.evaluate("window.location.search"), fid


def test_runs_page_reopens_and_compares_two_runs(server, browser):
    """Two saved runs (head scores of two zoo models) opened on the Runs page from a link with
    ``?a=`` and ``?b=``: both figures, the difference figure and the comparison are drawn."""
    import interp
    from interp import heads, runs

    ids = []
    for name in ("induction-2l", "recall-2l"):
        m = interp.load(name)
        result = runs.run(heads.scores, m, heads.default_tokens(m, n=2, length=32))
        ids.append(runs.save(result.with_figure("interp.plots.heads.head_heatmap", kinds=["induction"])))
    browser.call("Page.enable")
    browser.call("Page.navigate", url=f"{server}/runs?a={ids[0]}&b={ids[1]}")

    def listed():
        s = json.loads(browser.evaluate(PROBE) or "null")
        running = browser.evaluate("!!document.querySelector('[data-testid=\"stStatusWidget\"]')")
        # the Open tab shows the newest run: either id (both may be saved within the same second)
        opened = any(f"runs.load('{i}')" in s["text"] for i in ids) if s else False
        return s if s and (s["exceptions"] or s["errors"] or (opened and not running)) else None

    state = wait_for(listed, 120, "the Runs page")
    assert state["exceptions"] == 0 and state["errors"] == 0, state["text"][:2000]
    browser.evaluate(
        "[...document.querySelectorAll('[role=\"tab\"]')].find(b => b.innerText.includes('Compare')).click()"
    )

    def compared():
        s = json.loads(browser.evaluate(PROBE) or "null")
        return s if s and (s["exceptions"] or ("rows matched" in s["text"] and s["heatmaps"] >= 3)) else None

    state = wait_for(compared, 60, "the comparison of two runs")
    assert state["exceptions"] == 0 and state["errors"] == 0, state["text"][:2000]
    text = state["text"]
    assert f"A {ids[0]}" in text.replace("\n", " ") and f"B {ids[1]}" in text.replace("\n", " ")
    assert "48 / 48" in text and "differ" in text  # 2 layers x 4 heads x 6 kinds, matched cell by cell


# --- the shared head selection: click a head, find its panel, reload, click a circuit node -------------

# the viewport pixel of a point of a plotly figure: the trace named `trace` (in the figure drawn
# by the chart whose Streamlit key holds `where`), its point whose customdata matches `match`
POINT = """(() => {
  const plots = [...document.querySelectorAll('.js-plotly-plot')];
  for (const gd of plots) {
    const trace = (gd.data || []).find(t => t.name === %(trace)s);
    if (!trace) continue;
    const i = [...(trace.customdata || [])].findIndex(c => %(match)s);
    if (i < 0) return null;
    gd.scrollIntoView({block: 'center'});
    const L = gd._fullLayout, rect = gd.getBoundingClientRect();
    const xa = L['xaxis' + (trace.xaxis || 'x').slice(1)], ya = L['yaxis' + (trace.yaxis || 'y').slice(1)];
    const x = rect.left + xa._offset + xa.l2p(xa.d2c(trace.x[i]));
    const y = rect.top + ya._offset + ya.l2p(ya.d2c(trace.y[i]));
    return {x, y, label: String(trace.customdata[i])};
  }
  return null;
})()"""

SUBHEADERS = "[...document.querySelectorAll('h3')].map(h => h.innerText.trim())"


def click(browser, x: float, y: float) -> None:
    """A real left click at viewport pixel (x, y), through the DevTools protocol's input events."""
    browser.call("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)
    time.sleep(0.2)  # plotly picks the hovered point on mouse move
    for kind in ("mousePressed", "mouseReleased"):
        browser.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)


def settled(browser, want) -> dict | None:
    """The page's probe once Streamlit has stopped running and ``want(probe)`` holds (or an error shows)."""
    s = json.loads(browser.evaluate(PROBE) or "null")
    if s and (s["exceptions"] or s["errors"]):
        return s
    running = browser.evaluate("!!document.querySelector('[data-testid=\"stStatusWidget\"]')")
    return s if s and not running and want(s) else None


def panel_of(browser, title: str):
    def shown(s):
        # drawn to its end: the panel's last part says where the head sits in the circuit (or that none is computed)
        done = "In the circuit" in s["text"] or "No circuit computed" in s["text"]
        parts = "patching effect (normalised)" in s["text"] and "direct logit attribution" in s["text"]
        return title in browser.evaluate(SUBHEADERS) and parts and done

    state = wait_for(lambda: settled(browser, shown), 60, f"the panel {title}")
    assert state["exceptions"] == 0 and state["errors"] == 0, state["text"][:2000]
    text = state["text"]
    assert "patching effect (normalised)" in text and "direct logit attribution" in text
    # the head's attention on the prompt, its token labels on both axes
    want = f"{title.split()[-1]} on the prompt"
    figure = wait_for(  # the figure of this head (a rerun draws the subheader before the figure)
        lambda: (lambda f: f if f and f["title"] == want else None)(
            browser.evaluate(
                "(() => { const gd = [...document.querySelectorAll('.js-plotly-plot')].find(g => "
                "((g._fullLayout && g._fullLayout.title && g._fullLayout.title.text) || '').includes('on the prompt')); "
                "return gd ? {title: gd._fullLayout.title.text.replace(/<[^>]*>/g, ''), x: gd._fullLayout.xaxis.ticktext, "
                "y: gd._fullLayout.yaxis.ticktext} : null; })()"
            )
        ),
        30,
        "the head's attention figure",
    )
    assert figure and figure["title"] == f"{title.split()[-1]} on the prompt", figure
    assert figure["x"] == figure["y"] and len(figure["x"]) > 5
    return state


def test_clicked_head_opens_its_panel_reload_and_circuit_node(server, browser):
    """Heads page: it opens on the panel of the detected induction head (its default); a real click
    on the previous-token panel's cell of the detected previous-token head opens that head's panel
    (attention with token labels, patching effect, DLA); the URL keeps it across a reload; on the
    Circuit page a click on a head node opens the same panel."""
    import interp
    from interp import heads

    model = interp.load("induction-2l")
    scores = heads.scores(model, heads.default_tokens(model, n=16, length=64, seed=0))
    induction = heads.top_heads(scores, "induction", k=1)
    detected = heads.top_heads(scores, "previous_token", k=1)
    layer, head = int(detected.layer.iloc[0]), int(detected["head"].iloc[0])
    title = f"Head L{layer}H{head}"
    default = f"Head L{int(induction.layer.iloc[0])}H{int(induction['head'].iloc[0])}"
    assert default != title
    browser.call("Page.enable")
    browser.call("Page.navigate", url=f"{server}/heads")
    panel_of(browser, default)  # the page opens on the top induction head's panel
    assert title not in browser.evaluate(SUBHEADERS)
    where = wait_for(
        lambda: browser.evaluate(
            POINT % {"trace": json.dumps("previous_token (select)"), "match": f"c[0] == {layer} && c[1] == {head}"}
        ),
        30,
        "the head's click target in the score map",
    )
    click(browser, where["x"], where["y"])
    panel_of(browser, title)
    assert f"head={layer}.{head}" in browser.evaluate("window.location.search")
    # a reload (a new session) opens the same selection from the URL
    browser.call("Page.reload")
    time.sleep(1.0)
    panel_of(browser, title)
    # the Circuit page, a fresh session without a selection: click the head's node (or another head's)
    browser.call("Page.navigate", url=f"{server}/circuit")
    wait_for(lambda: settled(browser, lambda s: "Click a head node" in s["text"]), 120, "the Circuit page")
    where = wait_for(  # the graph is drawn once plotly has run: its head nodes, the selected head's first
        lambda: (
            browser.evaluate(POINT % {"trace": json.dumps("nodes"), "match": f"c === 'a{layer}.h{head}'"})
            or browser.evaluate(POINT % {"trace": json.dumps("nodes"), "match": "/^a\\d+\\.h\\d+$/.test(c)"})
        ),
        30,
        "a head node in the circuit graph",
    )
    l, h = where["label"][1:].split(".h")
    click(browser, where["x"], where["y"])
    state = panel_of(browser, f"Head L{l}H{h}")
    assert "In the circuit" in state["text"]
    assert f"head={l}.{h}" in browser.evaluate("window.location.search")


# the token view's iframe: hover a token (a mouseover event on its span), read every token's background
HOVER_TOKEN = """(() => {
  const frame = [...document.querySelectorAll('iframe')].find(f => f.contentDocument &&
    f.contentDocument.querySelector('#tokens .tok'));
  if (!frame) return null;
  const doc = frame.contentDocument;
  const spans = [...doc.querySelectorAll('#tokens .tok')];
  spans[%(pos)d].dispatchEvent(new MouseEvent('mouseover', {bubbles: true}));
  return {
    colours: spans.map(s => getComputedStyle(s).backgroundColor),
    outlined: spans.findIndex(s => s.style.outline.includes('solid')),
    info: doc.getElementById('info').textContent,
  };
})()"""


def alpha(colour: str) -> float:
    """The alpha of a CSS ``rgba(...)`` colour (1 for ``rgb(...)``, 0 for transparent)."""
    parts = colour[colour.index("(") + 1 : -1].split(",")
    return float(parts[3]) if len(parts) == 4 else 1.0


def test_token_view_colours_the_prompt_by_the_hovered_tokens_attention(server, browser):
    """Attention page: hovering a token of the token view colours every token by the attention the
    hovered token pays it (the last layer's heads averaged): the shading follows that row of the
    library's attention pattern, its most attended token the most saturated."""
    import interp
    from interp.attention import attention_patterns

    browser.call("Page.enable")
    browser.call("Page.navigate", url=f"{server}/attention")
    wait_for(lambda: settled(browser, lambda s: s["heatmaps"] >= 5), 90, "the Attention page")
    model = interp.load("induction-2l")
    tokens = model.to_tokens(browser.evaluate("document.querySelector('textarea').value"))  # the page's prompt
    row_of = attention_patterns(model, tokens)[-1].mean(0).numpy()  # [dest, src], the layer's heads averaged
    n = tokens.shape[1]
    for pos in (n - 1, n // 2 + 3):  # in the repeated half: an induction layer attends to one earlier token
        seen = wait_for(lambda pos=pos: browser.evaluate(HOVER_TOKEN % {"pos": pos}), 30, "the token view")
        shading = np.array([alpha(c) for c in seen["colours"]])
        expected = row_of[pos]
        assert seen["outlined"] == pos and f"from pos {pos}" in seen["info"]
        # the browser keeps a colour's alpha in 8 bits: equal to 1/255
        np.testing.assert_allclose(shading[: pos + 1], expected[: pos + 1], atol=1 / 255 + 1e-3)
        assert (shading[pos + 1 :] == 0).all()  # tokens after the hovered one: not coloured
        assert int(shading.argmax()) == int(expected.argmax()) and expected.max() > 0.3


# --- issue 25: the Training page (step slider over a checkpoint series) and the LSTM cell view ----------


@pytest.mark.slow  # the memory pages (issue 25) run after make test, with the other minutes-long checks
def test_training_page_slider_and_phase_figure(server, browser):
    """The Training page on the shipped induction-phase series: the step slider, the phase-change
    figure (three panels) and the detected heads' attention are drawn, no error box."""
    browser.call("Page.enable")
    browser.call("Page.navigate", url=f"{server}/training")

    def drawn(s):
        slider = browser.evaluate("document.querySelectorAll('[data-testid=\"stSlider\"]').length")
        return s["plots"] >= 2 and s["heatmaps"] >= 1 and slider >= 1 and "Training dynamics" in s["text"]

    state = wait_for(lambda: settled(browser, drawn), 240, "the Training page")
    assert state["exceptions"] == 0 and state["errors"] == 0, state["text"][:2000]
    assert "loss drop at step" in state["text"] and "prefix-matching jump at step" in state["text"]
    panels = browser.evaluate(
        "(() => { const gd = [...document.querySelectorAll('.js-plotly-plot')].find(g => ((g._fullLayout && "
        "g._fullLayout.title && g._fullLayout.title.text) || '').includes('phase change')); "
        "return gd ? Object.keys(gd._fullLayout).filter(k => /^yaxis\\d*$/.test(k)).length : 0; })()"
    )
    assert panels == 3
    # every panel on a log step axis, the chosen step's grey line drawn at that step's pixel
    line = browser.evaluate(
        "(() => { const gd = [...document.querySelectorAll('.js-plotly-plot')].find(g => ((g._fullLayout && "
        "g._fullLayout.title && g._fullLayout.title.text) || '').includes('phase change')); const L = gd._fullLayout; "
        "const i = L.shapes.findIndex(s => s.line.color === '#444'); const d = gd.querySelectorAll('.shapelayer path')[i]"
        ".getAttribute('d'); return {types: [L.xaxis.type, L.xaxis2.type, L.xaxis3.type], step: L.shapes[i].x0, "
        "drawn: parseFloat(d.slice(1)), expected: L.xaxis._offset + L.xaxis.l2p(Math.log10(L.shapes[i].x0))}; })()"
    )
    assert line["types"] == ["log", "log", "log"], line
    assert abs(line["drawn"] - line["expected"]) < 1.0, line


@pytest.mark.slow
def test_cells_page_colours_the_text(server, browser):
    """The Cells page on code-lstm (from its URL): the cells found, Karpathy's coloured text (one
    shaded span per character) and the gate-saturation figure."""
    browser.call("Page.enable")
    browser.call("Page.navigate", url=f"{server}/cells?model=code-lstm")
    spans = "document.querySelectorAll('.interp-cell-text pre span').length"

    def drawn(s):
        return s["plots"] >= 1 and browser.evaluate(spans) >= 300 and "LSTM cells" in s["text"]

    state = wait_for(lambda: settled(browser, drawn), 240, "the Cells page")
    assert state["exceptions"] == 0 and state["errors"] == 0, state["text"][:2000]
    assert "Model: code-lstm" in state["text"]
    colours = browser.evaluate(
        "[...document.querySelectorAll('.interp-cell-text pre span')].map(s => s.style.background)"
    )
    assert len(set(colours)) > 20  # shaded by the cell's activation, not one colour
    # the coloured text is titled with the found cell it shows (the tables are drawn on a canvas, not as DOM text)
    assert "tanh(c)" in state["text"] and "Gate saturation" in state["text"]
    title = browser.evaluate("(document.querySelector('.interp-cell-title') || {}).innerText || ''")
    assert re.fullmatch(r"L\d+ cell \d+", title.strip()), title


# --- more ways to select: a DLA cell, a click on a token of the token view --------------------------


@pytest.mark.slow  # about a minute: the Lens page, a click, the head panel's patching and DLA
def test_clicked_dla_cell_opens_the_head_panel(server, browser):
    """Lens page: a real mouse click on the DLA map's cell of the head with the largest direct
    attribution (computed here with interp.lens.dla on the page's prompt) opens that head's panel."""
    import interp
    from interp.lens import dla

    browser.call("Page.enable")
    browser.call("Page.navigate", url=f"{server}/lens")
    wait_for(lambda: settled(browser, lambda s: "to open its panel" in s["text"] and s["heatmaps"] >= 2), 90, "Lens")
    model = interp.load("induction-2l")
    tokens = model.to_tokens(browser.evaluate("document.querySelector('textarea').value"))
    frame = dla(model, tokens, int(model(tokens)[0, -1].argmax()))
    best = frame[frame.kind == "head"].sort_values("value").iloc[-1]
    layer, head = int(best.layer), int(best["head"])
    where = wait_for(
        lambda: browser.evaluate(
            POINT
            % {
                "trace": json.dumps("direct logit attribution (select)"),
                "match": f"c[0] == {layer} && c[1] == {head}",
            }
        ),
        30,
        "the head's cell in the DLA map",
    )
    click(browser, where["x"], where["y"])
    panel_of(browser, f"Head L{layer}H{head}")
    assert f"head={layer}.{head}" in browser.evaluate("window.location.search")


# the viewport pixel of token `pos` in the token view (its iframe's offset plus the span's box)
TOKEN_AT = """(() => {
  const frame = [...document.querySelectorAll('iframe')].find(f => f.contentDocument &&
    f.contentDocument.querySelector('#tokens .tok'));
  if (!frame) return null;
  frame.scrollIntoView({block: 'center'});
  const span = frame.contentDocument.querySelectorAll('#tokens .tok')[%(pos)d];
  const f = frame.getBoundingClientRect(), s = span.getBoundingClientRect();
  return {x: f.left + s.left + s.width / 2, y: f.top + s.top + s.height / 2,
          pinned: (frame.srcdoc.match(/let pinned = (\\d+);/) || [])[1]};
})()"""


@pytest.mark.slow  # about a minute: the Attention page, a click, the rerun, the Heads page
def test_clicked_token_sets_the_shared_token(server, browser):
    """Attention page: a real mouse click on a token of the token view makes it the shared token: the
    URL carries ``token=``, the view is drawn again pinned at it, and the Heads page's head panel
    opens on that destination token."""
    browser.call("Page.enable")
    browser.call("Page.navigate", url=f"{server}/attention")
    wait_for(lambda: settled(browser, lambda s: s["heatmaps"] >= 5), 90, "the Attention page")
    pos = 4
    where = wait_for(lambda: browser.evaluate(TOKEN_AT % {"pos": pos}), 30, "the token view")
    assert where["pinned"] != str(pos)
    click(browser, where["x"], where["y"])
    wait_for(lambda: f"token={pos}" in browser.evaluate("window.location.search"), 30, "token= in the URL")
    wait_for(
        lambda: settled(browser, lambda s: (browser.evaluate(TOKEN_AT % {"pos": pos}) or {}).get("pinned") == str(pos)),
        60,
        "the token view pinned at the clicked token",
    )
    search = browser.evaluate("window.location.search")
    browser.call("Page.navigate", url=f"{server}/heads{search}")  # the shared link opens the Heads page on it
    wait_for(lambda: settled(browser, lambda s: "Token (destination)" in s["text"]), 120, "the Heads page's panel")
    # the panel's one-destination view outlines its destination token: the clicked one
    # (waited for: st.html draws its element a moment after the script run ends)
    outlined = wait_for(
        lambda: browser.evaluate(
            "([...document.querySelectorAll('span')].find(s => (s.style.outline || '').includes('solid')) || {}).title"
        ),
        30,
        "the outlined destination token",
    )
    assert outlined.startswith(f"pos {pos} "), outlined
