"""P6/P7: a new user's first visit, timed in a real headless Chromium from `make run` with an empty cache.

The app is started exactly as the README starts it (`make run`), with a brand-new slsviz cache (so the
default backbone is converted and every feature and map is computed). The browser is launched first, so
its own start is not counted. The clock starts when `make run` is launched; the user then:

1. opens the app (home: the model card);
2. follows the sidebar link to Layers as soon as the card is shown, and reads "SLS recommends ..." (P6);
3. follows the link to Prune & benchmark as soon as the recommendation is shown, and waits until every
   read-out is there: accuracy as is and re-fit, throughput, latency, the accuracy/throughput chart (P7);
4. moves the depth slider one step at a time: each move is timed until the read-outs show the new depth.

Targets (2-core CPU): P6 <= 30 s, P7 <= 60 s, a slider move < 0.2 s.

Run: .venv/bin/python benchmarks/first_visit.py [--moves 10] [--limit N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request

import numpy as np

from report import ROOT, write_section

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
LONG_MS = 900_000
# In the watching session: when the exact recommendation first shows (its banner, no provisional one).
EXACT_WATCH = """() => {
  window.slsvizExactSeen = null;
  const look = () => { const text = document.body.innerText;
                       if (!window.slsvizExactSeen && text.includes('SLS recommends keeping') && !text.includes('Provisional'))
                         window.slsvizExactSeen = Date.now(); };
  new MutationObserver(look).observe(document.body, {subtree: true, childList: true, characterData: true});
  look();
}"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _metric(page, label: str) -> str:
    box = page.locator("[data-testid='stMetric']", has_text=label).first
    return box.locator("[data-testid='stMetricValue']").inner_text()


def _go(page, title: str) -> None:
    page.get_by_test_id("stSidebarNavLink").filter(has_text=title).first.click()


def visit(page, url: str, started: float, moves: int) -> dict[str, float | list[float]]:
    """Seconds since ``started`` at each moment of the visit, and the slider moves' seconds."""
    def now() -> float:
        return time.perf_counter() - started

    out: dict[str, float | list[float]] = {}
    page.goto(url, timeout=LONG_MS)
    page.get_by_text("Trainable (adapters + head)").wait_for(timeout=LONG_MS)
    out["home"] = now()
    _go(page, "Layers")
    page.get_by_text("SLS recommends keeping").wait_for(timeout=LONG_MS)
    out["recommendation"] = now()
    out["provisional"] = page.get_by_text("Provisional").count() > 0
    _go(page, "Prune & benchmark")
    page.get_by_text("Accuracy against throughput, every depth").first.wait_for(timeout=LONG_MS)
    page.locator(".js-plotly-plot").first.wait_for(timeout=LONG_MS)
    for label in ("Accuracy as is (task head)", "Accuracy, head re-fit", "Throughput (batch 1)", "Latency (batch 1)"):
        _metric(page, label)
    out["prune_ready"] = now()
    if out["provisional"]:  # a second session waits on Layers for the exact recommendation meanwhile
        watcher = page.context.new_page()
        watcher.goto(url, timeout=LONG_MS)
        _go(watcher, "Layers")
        watcher.evaluate(EXACT_WATCH)
    out["slider_moves_refining"] = _move_slider(page, moves)
    provisional = page.get_by_text("Provisional accuracies")
    if provisional.count():
        provisional.wait_for(state="detached", timeout=LONG_MS)
    # .first: while the page reloads with the exact figures the old heading may still be there beside the new
    page.get_by_text("Accuracy against throughput, every depth").first.wait_for(timeout=LONG_MS)
    out["exact"] = now()
    if out["provisional"]:
        watcher.wait_for_function("() => window.slsvizExactSeen !== null", timeout=LONG_MS, polling=100)
        seen_ms = watcher.evaluate("() => window.slsvizExactSeen")
        out["recommendation_exact"] = seen_ms / 1000 - (time.time() - now())  # the page's clock to ours
        watcher.close()
    page.wait_for_timeout(2000)
    out["slider_moves"] = _move_slider(page, moves)
    return out


SENT: list[float] = []  # when the browser sent each websocket message to the app


def _watch_messages(page) -> None:
    page.on("websocket", lambda ws: ws.on("framesent", lambda _: SENT.append(time.perf_counter())))


def _move_slider(page, moves: int) -> list[tuple[float, float]]:
    """For each key press on the depth slider: seconds until the read-outs show the new depth, from the
    press and from the moment the browser sent the new value to the app (the slider's own wait left out)."""
    slider = page.locator("[data-testid='stSlider'] input[type='range']").first
    slider.focus()
    times = []
    for i in range(moves):
        before = _metric(page, "GFLOPs / image")
        key = "ArrowLeft" if (i // 3) % 2 == 0 else "ArrowRight"
        t = time.perf_counter()
        page.keyboard.press(key)
        page.wait_for_function(
            "([label, old]) => { const m = [...document.querySelectorAll(\"[data-testid='stMetric']\")]"
            ".find(e => e.innerText.includes(label)); return m && !m.innerText.includes(old); }",
            arg=["GFLOPs / image", before], timeout=60_000, polling=10)  # look every 10 ms
        done = time.perf_counter()
        sent = next((s for s in SENT if t <= s <= done), t)
        times.append((done - t, done - sent))
    return times


def _stop(server: subprocess.Popen) -> None:
    """SIGTERM the app's process group (make and the server) and wait until every process in it is gone,
    so that a lingering server cannot slow the next measurement."""
    group = server.pid
    os.killpg(group, signal.SIGTERM)
    deadline = time.perf_counter() + 30
    while time.perf_counter() < deadline:
        server.poll()  # reap make, or its zombie would keep the group alive
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    os.killpg(group, signal.SIGKILL)
    raise SystemExit("the app did not stop within 30 s of SIGTERM")


def _ms(seconds: list[float]) -> str:
    return f"{1000 * sum(seconds) / len(seconds):.0f} / {1000 * max(seconds):.0f}"


def floors() -> dict[str, float]:
    """Seconds of each step that must happen before P6 and P7 can be shown, measured one after the other
    in this process on an empty cache (the imports in a fresh process): the floor of each target here."""
    import sys

    from common import fresh_cache

    from slsviz import defaults
    from slsviz.layers.analysis import AnalysisSettings
    from slsviz.study import Selection, Study

    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import streamlit, slsviz.study"], check=True, cwd=ROOT)
    steps = {"imports (streamlit, torch, timm, scikit-learn; a fresh process)": time.perf_counter() - t}
    with fresh_cache():
        for name, work in [
            ("default backbone converted and loaded, task and dataset opened", lambda: Study.open(Selection())),
        ]:
            t = time.perf_counter()
            study = work()
            steps[name] = time.perf_counter() - t
        store, settings = study.features, AnalysisSettings()
        n, first = store.preview_size("test"), sum(store.preview_size(split) or 0 for split in ("train", "val"))
        for name, work in [
            (f"features of the first {first} scored images (train + val)", lambda: store.first_scored()),
            ("provisional recommendation: the maps its scan needs, its spread", lambda: study.layers.provisional(settings)),
            (f"features of the first {n} test images", lambda: store.first_images("test")),
            ("heads re-fit at every depth on the first train images", lambda: study.depths.table_soon(defaults.SEED)),
            ("timing of all depths, interleaved", lambda: study.timing.benchmarks()),
            ("features of the rest of train + val", lambda: store.scored()),
            ("exact recommendation: the maps its scan needs", lambda: study.layers.recommend(settings)),
        ]:
            t = time.perf_counter()
            work()
            steps[name] = time.perf_counter() - t
        steps["panel"] = _panel_seconds(study)
        early, exact = study.layers.provisional(settings), study.layers.recommend(settings)
        low, high = early.spread.interval()
        differences = np.abs(early.rule.scores_ - exact.scores_)
        steps["agreement"] = (f"The provisional recommendation kept {early.rule.depth_} blocks (90% of its resamples: "
                              f"{low}..{high}); the exact one {exact.depth_}. Their silhouettes of the blocks both scored "
                              f"differ by {np.nanmean(differences):.3f} on average, {np.nanmax(differences):.3f} at most.")
    return steps


def _panel_seconds(study) -> float:
    """Mean seconds of what the Prune page's depth panel computes on a slider move (bytes per task, the
    all-depth chart's figure), over every depth: the app's own share of a move."""
    from slsviz.app import charts

    table, timed = study.depths.table_soon()[0], study.timing.benchmarks()
    frame = table.assign(images_per_s=[timed[d].images_per_s for d in range(1, study.num_layers + 1)])
    charts.accuracy_vs_throughput(frame, chosen=1)  # plotly's first figure builds its templates
    t = time.perf_counter()
    for depth in range(1, study.num_layers + 1):
        study.timing.storage(depth)
        charts.accuracy_vs_throughput(frame, chosen=depth)
    return (time.perf_counter() - t) / study.num_layers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--moves", type=int, default=10, help="slider moves to time")
    parser.add_argument("--limit", type=int, help="SLSVIZ_LIMIT: images per split (default: all, as a user gets)")
    parser.add_argument("--print-only", action="store_true", help="print the visit's figures; no floor, no BENCHMARKS.md")
    parser.add_argument("--server-log", help="keep the app's output in this file (default: dropped)")
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("Debian chromium is needed: `make chromium` (or apt-get install chromium).")
    from playwright.sync_api import sync_playwright

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="slsviz-first-visit-") as cache, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
        _watch_messages(page)
        env = {**os.environ, "SLSVIZ_CACHE_DIR": cache}
        if args.limit:
            env["SLSVIZ_LIMIT"] = str(args.limit)
        started = time.perf_counter()
        log = open(args.server_log, "w") if args.server_log else subprocess.DEVNULL  # noqa: SIM115
        server = subprocess.Popen(["make", "run", f"PORT={port}"], cwd=ROOT, env=env, stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True)
        try:
            while True:
                try:
                    if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                        break
                except OSError:
                    time.sleep(0.2)
            health = time.perf_counter() - started
            out = visit(page, url, started, args.moves)
        finally:
            browser.close()
            _stop(server)

    moves, refining = out["slider_moves"], out["slider_moves_refining"]
    rows = [("server answers (health)", health, ""), ("home: model card shown", out["home"], ""),
            ("P6: \"SLS recommends ...\" on Layers" + (" (provisional, from the first images)" if out["provisional"] else ""),
             out["recommendation"], "<= 30 s"),
            *([("the exact recommendation replaces it (seen by a second session waiting on Layers)",
                out["recommendation_exact"], "")]
              if out["provisional"] else []),
            ("P7: Prune page with every read-out (accuracies provisional where the test split is big)",
             out["prune_ready"], "<= 60 s"),
            ("exact accuracies replace the provisional ones", out["exact"], "")]
    body = ("Fresh slsviz cache, `make run`, headless Chromium; the user follows each sidebar link as soon as the "
            f"page shows what it is for (images per split: {args.limit or 'all'}).\n\n"
            "| moment | seconds since `make run` | target |\n|---|---|---|\n"
            + "\n".join(f"| {name} | {s:.1f} | {target} |" for name, s, target in rows)
            + f"\n\nSlider moves, {len(moves)} each, until the read-outs show the new depth (target < 200 ms), "
            "from the key press, and from the moment the browser sent the new value to the app (what the app "
            "takes: the slider's own wait before sending is left out):\n\n"
            "| when | from the key press: mean / max ms | from the message: mean / max ms |\n|---|---|---|\n"
            + "\n".join(f"| {when} | {_ms([m[0] for m in ms])} | {_ms([m[1] for m in ms])} |"
                        for when, ms in (("exact figures in, the app idle", moves),
                                         ("while the rest of the test split is read", refining))))
    if args.print_only:
        print(body)
        return
    steps = floors()
    panel, agreement = steps.pop("panel"), steps.pop("agreement")
    names = list(steps)
    p6 = sum(steps[k] for k in names[:4])
    p7 = p6 + sum(steps[k] for k in names[4:7])
    exact = sum(steps[k] for k in names[:3]) + sum(steps[k] for k in names[7:])
    body += ("\n\nThe floor: what must happen before each answer, measured step by step in one process on an empty "
             "cache (nothing else running):\n\n| step | seconds |\n|---|---|\n"
             + "\n".join(f"| {k} | {v:.1f} |" for k, v in steps.items())
             + f"\n\nFloor of P6 (the provisional recommendation): **{p6:.1f} s**; of P7 (provisional accuracies): "
             f"**{p7:.1f} s**; of the exact recommendation alone (imports, loading, the whole fp32 pass over train + val, "
             f"its maps): **{exact:.1f} s**. "
             f"What the depth panel itself computes on a slider move (bytes per task, the chart's figure): "
             f"**{1000 * panel:.0f} ms** on average over the depths; the rest of a move is Streamlit's and the "
             f"browser's.\n\n{agreement}")
    command = "python benchmarks/first_visit.py" + (f" --limit {args.limit}" if args.limit else "")
    write_section("first_visit", "P6/P7 - first visit in a browser, cold cache", command, body)


if __name__ == "__main__":
    main()
