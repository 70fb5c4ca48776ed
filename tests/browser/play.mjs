// Plays an HLS URL in headless Chromium with hls.js and reports what happened, as JSON on
// stdout: {"ok": bool, "currentTime": s, "errors": [...], "tracks": {...}}.
// Usage: node play.mjs URL SECONDS
// The page is about:blank (an opaque origin), so every request is cross-origin: the server's
// CORS headers are exercised for real.
import { chromium } from "playwright-core";
import { fileURLToPath } from "node:url";
import path from "node:path";

const [url, seconds] = [process.argv[2], Number(process.argv[3] ?? 4)];
const here = path.dirname(fileURLToPath(import.meta.url));
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
  ],
});
let result;
try {
  const page = await browser.newPage();
  await page.setContent('<video id="v" muted autoplay playsinline></video>');
  await page.addScriptTag({ path: path.join(here, "node_modules/hls.js/dist/hls.min.js") });
  result = await page.evaluate(async ([url, seconds]) => {
    const video = document.getElementById("v");
    const errors = [];
    const tracks = {};
    if (!Hls.isSupported()) return { ok: false, errors: ["hls.js: MSE not supported"] };
    const hls = new Hls({ enableWorker: true });
    hls.on(Hls.Events.ERROR, (_, d) => errors.push(`${d.fatal ? "fatal " : ""}${d.type}/${d.details}`));
    hls.on(Hls.Events.BUFFER_CODECS, (_, d) => {
      for (const [k, v] of Object.entries(d)) tracks[k] = v.codec || v.container || v.mimeType || true;
    });
    hls.loadSource(url);
    hls.attachMedia(video);
    video.play().catch((e) => errors.push(`play: ${e.message}`));
    const deadline = Date.now() + (seconds + 20) * 1000;
    while (Date.now() < deadline && video.currentTime < seconds && !errors.some((e) => e.startsWith("fatal"))) {
      await new Promise((r) => setTimeout(r, 200));
    }
    const ok = video.currentTime >= seconds && !errors.some((e) => e.startsWith("fatal"));
    return { ok, currentTime: video.currentTime, errors, tracks, videoWidth: video.videoWidth };
  }, [url, seconds]);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
