// The player page of one stream: hls.js (or the browser's own HLS, in Safari) with how far
// behind live it plays and how often it stalled, and the stream's figures every 5 s.
"use strict";

const name = decodeURIComponent(location.pathname.split("/").pop() || "");
const playlist = `/hls/${encodeURIComponent(name)}/index.m3u8`;
const video = document.getElementById("video");
const say = (id, text) => { document.getElementById(id).textContent = text; };
say("name", name);
say("playlist", new URL(playlist, location.href).href);
document.title = `${name} · rtmp-hls`;

let stalls = 0;
let playing = false;
video.addEventListener("playing", () => { playing = true; });
video.addEventListener("waiting", () => { if (playing) say("stalls", String(++stalls)); });
video.addEventListener("ended", () => say("state", "Ended"));

let hls = null;
if (window.Hls && Hls.isSupported()) {
  // Low-latency playlists play with parts; others as usual. Catch up to the live edge
  // after joining or a stall.
  hls = new Hls({ lowLatencyMode: true, maxLiveSyncPlaybackRate: 1.5 });
  hls.on(Hls.Events.ERROR, (_, data) => {
    if (data.fatal) say("message", `Playback stopped: ${data.type} (${data.details}). Reload the page to try again.`);
  });
  hls.loadSource(playlist);
  hls.attachMedia(video);
} else if (video.canPlayType("application/vnd.apple.mpegurl")) {
  video.src = playlist;
} else {
  say("message", "This browser cannot play HLS.");
}
video.play().catch(() => {});

setInterval(() => {
  // How far behind the encoder: now minus the EXT-X-PROGRAM-DATE-TIME of the frame shown.
  const shown = hls?.playingDate ?? (video.getStartDate && !isNaN(video.getStartDate()) ? new Date(video.getStartDate().getTime() + video.currentTime * 1000) : null);
  if (shown && playing) say("latency", `${((Date.now() - shown.getTime()) / 1000).toFixed(1)} s`);
}, 500);

async function figures() {
  try {
    const response = await fetch("/web/streams.json", { cache: "no-store" });
    const { streams } = await response.json();
    const stream = streams.find((s) => s.name === name);
    if (!stream) { say("state", "Not live"); return; }
    say("state", stream.live ? "Live" : "Ended");
    const v = stream.video;
    if (v && v.width && v.height) say("picture", `${v.width}×${v.height}`);
    if (stream.publisher && stream.live) {
      const bps = stream.publisher.bitrate_bps;
      say("bitrate", bps >= 1e6 ? `${(bps / 1e6).toFixed(1)} Mbit/s` : `${Math.round(bps / 1e3)} kbit/s`);
    }
    say("viewers", String(stream.viewers));
  } catch (_) { /* the next round retries */ }
}
figures();
setInterval(figures, 5000);
