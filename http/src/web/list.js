// The list of streams: /web/streams.json every 5 s, one card per stream. Every value from the
// server goes in as text, never as markup.
"use strict";

const bitrate = (bps) => (bps >= 1e6 ? `${(bps / 1e6).toFixed(1)} Mbit/s` : `${Math.round(bps / 1e3)} kbit/s`);

function since(iso) {
  const seconds = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

function row(list, term, value) {
  const dt = document.createElement("dt");
  dt.textContent = term;
  const dd = document.createElement("dd");
  dd.textContent = value;
  list.append(dt, dd);
}

function card(stream) {
  const item = document.createElement("li");
  item.className = "stream";
  item.dataset.stream = stream.name;
  const link = document.createElement("a");
  link.className = "name";
  link.href = `/watch/${encodeURIComponent(stream.name)}`;
  link.textContent = stream.name;
  const badge = document.createElement("span");
  const state = stream.live ? "live" : stream.reconnecting ? "reconnecting" : "ended";
  badge.className = state === "live" ? "live" : `live ${state}`;
  badge.textContent = state.toUpperCase();
  const facts = document.createElement("dl");
  const publisher = stream.publisher;
  if (publisher) {
    const [label, when] = {
      live: ["Live for", since(publisher.since)],
      reconnecting: ["Dropped", `${since(publisher.ended_at ?? publisher.since)} ago; waiting for the encoder`],
      ended: ["Ended", `${since(publisher.ended_at ?? publisher.since)} ago`],
    }[state];
    row(facts, label, when);
  }
  const video = stream.video;
  if (video && video.width && video.height) row(facts, "Picture", `${video.width}×${video.height}${video.fps ? ` at ${Math.round(video.fps)} fps` : ""}`);
  if (publisher && stream.live) row(facts, "Bitrate", bitrate(publisher.bitrate_bps));
  row(facts, "Viewers", String(stream.viewers));
  const codecs = [video?.codec, stream.audio?.codec].filter(Boolean).join(", ");
  if (codecs) row(facts, "Codecs", codecs);
  item.append(link, badge, facts);
  return item;
}

async function refresh() {
  try {
    const response = await fetch("/web/streams.json", { cache: "no-store" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const { streams } = await response.json();
    const live = streams.filter((s) => s.live).length;
    const reconnecting = streams.filter((s) => s.reconnecting).length;
    const ended = streams.length - live - reconnecting;
    document.getElementById("summary").textContent =
      `${live} live${reconnecting ? `, ${reconnecting} reconnecting` : ""}, ${ended} ended recently`;
    document.getElementById("streams").replaceChildren(...streams.map(card));
    document.getElementById("empty").hidden = streams.length > 0;
  } catch (e) {
    document.getElementById("summary").textContent = `Could not load the streams (${e.message}); retrying`;
  }
}

document.getElementById("ingest-url").textContent = `rtmp://${location.hostname}:1935/live`;
refresh();
setInterval(refresh, 5000);
