// The built-in web page in headless Chromium: the list at BASE/ shows STREAM, at a desktop
// width and at a phone's (390 px, with nothing wider than the screen); its link opens the
// player, which plays. Screenshots go to OUT_DIR (list-desktop.png, list-phone.png,
// player.png) for a person to look at. hls.js comes from the pinned npm package in place of
// jsDelivr (the browser still checks the page's Subresource Integrity against it; another
// version's URL is refused). Prints a JSON report; exits 1 if the stream did not play.
// Usage: node page.mjs BASE_URL STREAM OUT_DIR
import { launch } from "./chromium.mjs";
import { fileURLToPath } from "node:url";
import { readFileSync } from "node:fs";
import path from "node:path";

const [base, stream, out] = process.argv.slice(2);
const here = path.dirname(fileURLToPath(import.meta.url));
const pinned = JSON.parse(readFileSync(path.join(here, "node_modules/hls.js/package.json"))).version;
const browser = await launch();
const report = { pinned, listed: [], phoneOverflow: null, played: 0, latency: null, problems: [] };
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  await context.route("https://cdn.jsdelivr.net/**", (route) => {
    if (route.request().url() !== `https://cdn.jsdelivr.net/npm/hls.js@${pinned}/dist/hls.min.js`) {
      report.problems.push(`unexpected CDN request ${route.request().url()}`);
      return route.abort();
    }
    return route.fulfill({
      path: path.join(here, "node_modules/hls.js/dist/hls.min.js"),
      contentType: "text/javascript",
      headers: { "access-control-allow-origin": "*" },
    });
  });
  const page = await context.newPage();
  page.on("console", (m) => { if (m.type() === "error") report.problems.push(`console: ${m.text()}`); });
  page.on("pageerror", (e) => report.problems.push(`page error: ${e.message}`));

  await page.goto(`${base}/`);
  await page.waitForSelector(`li.stream[data-stream="${stream}"]`, { timeout: 15000 });
  report.listed = await page.$$eval("li.stream", (items) => items.map((i) => i.dataset.stream));
  await page.screenshot({ path: path.join(out, "list-desktop.png"), fullPage: true });
  await page.setViewportSize({ width: 390, height: 844 });
  report.phoneOverflow = await page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth);
  await page.screenshot({ path: path.join(out, "list-phone.png"), fullPage: true });
  await page.setViewportSize({ width: 1280, height: 800 });

  await page.click(`li.stream[data-stream="${stream}"] a.name`);
  await page.waitForURL(`**/watch/${stream}`);
  report.played = await page.evaluate(async () => {
    const video = document.getElementById("video");
    const deadline = Date.now() + 30000;
    let from = null;
    while (Date.now() < deadline) {
      if (from === null && video.currentTime > 0 && !video.paused) from = video.currentTime;
      if (from !== null && video.currentTime - from >= 4) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    return from === null ? 0 : video.currentTime - from;
  });
  report.latency = await page.textContent("#latency");
  report.message = await page.textContent("#message");
  await page.screenshot({ path: path.join(out, "player.png") });
} finally {
  await browser.close();
}
console.log(JSON.stringify(report));
process.exit(report.played >= 4 ? 0 : 1);
