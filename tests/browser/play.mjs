// Plays an HLS URL in headless Chromium with hls.js and reports what happened, as JSON on
// stdout: {"ok": bool, "currentTime": s, "errors": [...], "tracks": {...}, "latency": {...}}.
// Usage: node play.mjs URL SECONDS [low-latency | watch]
// With `low-latency`, hls.js runs in lowLatencyMode (blocking reloads, parts, preload hints)
// and the report gives the playhead's distance behind the publisher: now minus the
// EXT-X-PROGRAM-DATE-TIME of the frame shown (the server dates each segment when its first
// frame arrives, on this machine's clock), sampled every 100 ms once playing, and stalls
// (the video waiting for data after it started).
// With `watch`, it plays until the video ends (EXT-X-ENDLIST reached) or SECONDS of wall time
// pass, and the report adds when the video ended and the playhead every 250 ms, each as
// [wall-clock ms, currentTime].
// The page is about:blank (an opaque origin), so every request is cross-origin: the server's
// CORS headers are exercised for real.
// With `switch`, URL is a multivariant playlist: halfway through, the player is made to
// switch to another rendition, and the report adds the renditions hls.js read (`levels`), the
// one forced (`forcedTo`) and every switch it made (`switched`); done once it played SECONDS
// and switched.
// With `--cookie TOKEN` (last), the browser holds the platform's login cookie
// (`access_token_cookie`) for the server's origin and the page is served from that origin, as
// the platform's own site would embed the player: hls.js's requests carry the cookie.
import { launch } from "./chromium.mjs";
import { fileURLToPath } from "node:url";
import path from "node:path";

const [url, seconds] = [process.argv[2], Number(process.argv[3] ?? 4)];
const lowLatency = process.argv[4] === "low-latency";
const watch = process.argv[4] === "watch";
const switching = process.argv[4] === "switch";
const cookieAt = process.argv.indexOf("--cookie");
const cookie = cookieAt > 0 ? process.argv[cookieAt + 1] : null;
const here = path.dirname(fileURLToPath(import.meta.url));
const browser = await launch();
let result;
try {
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  const page = await context.newPage();
  if (cookie) {
    const origin = new URL(url).origin;
    await context.addCookies([{ name: "access_token_cookie", value: cookie, url: origin, httpOnly: true }]);
    await page.goto(`${origin}/healthz`);
  }
  await page.setContent('<video id="v" muted autoplay playsinline></video>');
  await page.addScriptTag({ path: path.join(here, "node_modules/hls.js/dist/hls.min.js") });
  result = await page.evaluate(async ([url, seconds, lowLatency, watch, switching]) => {
    const video = document.getElementById("v");
    const errors = [];
    const tracks = {};
    if (!Hls.isSupported()) return { ok: false, errors: ["hls.js: MSE not supported"] };
    // In low latency, hls.js may play up to 1.5x to reach its target latency (PART-HOLD-BACK)
    // after joining or a stall, as a low-latency page would set it; otherwise it keeps
    // whatever distance it joined at.
    const hls = new Hls(lowLatency
      ? { enableWorker: true, lowLatencyMode: true, maxLiveSyncPlaybackRate: 1.5 }
      : { enableWorker: true, lowLatencyMode: false });
    const behind = [];
    let stalls = 0;
    let started = false;
    // Media time played is counted from the first frame shown: a live stream's timeline
    // starts where the player joined, not at zero.
    let from = null;
    video.addEventListener("playing", () => { started = true; if (from === null) from = video.currentTime; });
    video.addEventListener("waiting", () => { if (started) stalls += 1; });
    let endedAt = null;
    video.addEventListener("ended", () => { endedAt = Date.now(); });
    const playhead = [];
    const tracker = setInterval(() => playhead.push([Date.now(), video.currentTime]), 250);
    const sampler = setInterval(() => {
      if (started && !video.paused && hls.playingDate) behind.push(Date.now() - hls.playingDate.getTime());
    }, 100);
    hls.on(Hls.Events.ERROR, (_, d) => errors.push(`${d.fatal ? "fatal " : ""}${d.type}/${d.details}`));
    const switched = [];
    let forcedTo = null;
    hls.on(Hls.Events.LEVEL_SWITCHED, (_, d) => switched.push(d.level));
    hls.on(Hls.Events.BUFFER_CODECS, (_, d) => {
      for (const [k, v] of Object.entries(d)) tracks[k] = v.codec || v.container || v.mimeType || true;
    });
    hls.loadSource(url);
    hls.attachMedia(video);
    video.play().catch((e) => errors.push(`play: ${e.message}`));
    const deadline = Date.now() + (seconds + (watch ? 0 : 20)) * 1000;
    const played = () => (from === null ? 0 : video.currentTime - from);
    const done = () =>
      watch ? endedAt !== null
        : switching ? played() >= seconds && forcedTo !== null && switched.includes(forcedTo)
        : played() >= seconds;
    while (Date.now() < deadline && !done() && !errors.some((e) => e.startsWith("fatal"))) {
      if (switching && forcedTo === null && played() >= seconds / 2 && hls.levels.length > 1) {
        forcedTo = hls.currentLevel === 0 ? 1 : 0;
        hls.currentLevel = forcedTo;
      }
      await new Promise((r) => setTimeout(r, 200));
    }
    clearInterval(sampler);
    clearInterval(tracker);
    const ok = done() && !errors.some((e) => e.startsWith("fatal"));
    const sorted = behind.slice().sort((a, b) => a - b);
    const at = (q) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] / 1000 : null);
    const latency = { samples: sorted.length, median_s: at(0.5), p95_s: at(0.95), stalls };
    // The HTTP versions the media came over (the server allows Resource Timing).
    const protocols = [...new Set(performance.getEntriesByType("resource").map((e) => e.nextHopProtocol))];
    const watched = watch ? { endedAt, playhead } : {};
    const levels = hls.levels.map((l) => ({ width: l.width, height: l.height, bitrate: l.bitrate, codecs: l.codecSet }));
    const switches = switching ? { levels, forcedTo, switched } : {};
    return { ok, currentTime: video.currentTime, played: played(), errors, tracks, videoWidth: video.videoWidth, latency, protocols, ...watched, ...switches };
  }, [url, seconds, lowLatency, watch, switching]);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
