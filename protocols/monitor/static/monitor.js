// dyadlab monitor page: receives decimated traces (binary frames) and status (JSON) over one
// WebSocket and draws both participants, the block, the recording and live synchrony.
// Plain canvas: stacked min/max envelopes per pixel column are a few lines of drawing code, and a
// plotting library's one-scale-per-chart model would need 64 offset series per participant.
"use strict";

// <B3xIIIIdd: kind, stream index, bins, channels, samples per bin, newest stamp, bins per second
const HEADER_BYTES = 36;
const TRACE_FRAME = 1;
const BUFFER_S = 32; // seconds of bins kept per stream (the longest window is 30 s)
const SYNC_WINDOW_S = 120; // seconds of synchrony drawn
const MIN_DRAW_INTERVAL_MS = 40;
const BANDS = ["theta", "alpha", "beta", "gamma"];
const METRICS = ["plv", "envcorr"];
const COLORS = { plv: "#5ab0ff", envcorr: "#ffa94d" };

// Everything a test or the benchmark reads back: counts, latest status, draw delays.
const state = {
  framesReceived: 0,
  bytesReceived: 0,
  binsReceived: {}, // stream index -> bins
  draws: 0,
  drawDelays: [], // seconds from a sample's LSL stamp to the draw that showed it
  clockOffset: null, // LSL seconds minus performance.now() seconds
  clockRtt: Infinity,
  status: null,
  synchrony: {}, // channel label -> latest value
};
window.monitorState = state;

const traces = new Map(); // stream index -> ring buffer of bins
const hidden = new Set(); // "index:label" of channels the user deselected
const syncHistory = { stamps: [], labels: [], values: [] }; // what the synchrony panel draws
state.synchronyHistory = syncHistory;
const markerEvents = [];
let pendingStamps = new Map(); // stream index -> newest stamp received since the last draw
let socket = null;
let lastDraw = -Infinity;

function controls() {
  return {
    scale: Number(document.getElementById("scale").value),
    windowS: Number(document.getElementById("window").value),
  };
}

function tokenQuery() {
  const token = new URLSearchParams(location.search).get("token");
  return token ? `?token=${encodeURIComponent(token)}` : "";
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  socket = new WebSocket(`${scheme}://${location.host}/ws${tokenQuery()}`);
  socket.binaryType = "arraybuffer";
  const connection = document.getElementById("connection");
  socket.onopen = () => {
    connection.dataset.state = "open";
    connection.textContent = "connected";
    sendFilter();
    for (let i = 0; i < 5; i++) setTimeout(pingClock, 100 * i);
  };
  socket.onclose = () => {
    connection.dataset.state = "closed";
    connection.textContent = "disconnected: retrying";
    setTimeout(connect, 1000);
  };
  socket.onmessage = (event) => {
    if (typeof event.data === "string") onJson(JSON.parse(event.data));
    else onFrame(event.data);
  };
}

function pingClock() {
  if (socket && socket.readyState === WebSocket.OPEN)
    socket.send(JSON.stringify({ type: "clock", page_ms: performance.now() }));
}

function sendFilter() {
  socket.send(JSON.stringify({ type: "filter", value: document.getElementById("filter").value }));
  for (const ring of traces.values()) ring.total = 0; // filtered and unfiltered do not mix
}

function onFrame(buffer) {
  const view = new DataView(buffer);
  if (view.getUint8(0) !== TRACE_FRAME) return;
  const index = view.getUint32(4, true);
  const nBins = view.getUint32(8, true);
  const nChannels = view.getUint32(12, true);
  const newest = view.getFloat64(20, true);
  const binRate = view.getFloat64(28, true);
  const values = new Float32Array(buffer, HEADER_BYTES, nBins * nChannels * 2);
  let ring = traces.get(index);
  if (!ring || ring.nChannels !== nChannels || ring.binRate !== binRate) {
    const capacity = Math.ceil(BUFFER_S * binRate);
    ring = { nChannels, binRate, capacity, total: 0, data: new Float32Array(capacity * nChannels * 2) };
    traces.set(index, ring);
  }
  const stride = nChannels * 2;
  for (let b = 0; b < nBins; b++) {
    const slot = (ring.total % ring.capacity) * stride;
    ring.data.set(values.subarray(b * stride, (b + 1) * stride), slot);
    ring.total++;
  }
  state.framesReceived++;
  state.bytesReceived += buffer.byteLength;
  state.binsReceived[index] = (state.binsReceived[index] || 0) + nBins;
  pendingStamps.set(index, newest);
}

function onJson(message) {
  if (message.type === "clock") {
    const now = performance.now();
    const rtt = now - message.page_ms;
    if (rtt <= state.clockRtt) {
      state.clockRtt = rtt;
      state.clockOffset = message.lsl - (message.page_ms + rtt / 2) / 1000;
    }
  } else if (message.type === "status") {
    state.status = message;
    markerEvents.push(...message.new_markers);
    for (const [, sync] of Object.entries(message.synchrony)) addSynchrony(sync);
    renderStatus(message);
  }
}

// ---------------------------------------------------------------- participant panels

function panelKey(stream) {
  return stream.participant || stream.name;
}

function ensurePanel(key) {
  const id = `participant-${key}`;
  let panel = document.getElementById(id);
  if (panel) return panel;
  const container = document.getElementById("participants");
  container.querySelector(".waiting")?.remove();
  panel = document.createElement("section");
  panel.className = "participant";
  panel.id = id;
  panel.dataset.participant = key;
  panel.innerHTML = `<h2>Participant ${key}</h2>
    <table class="streams"><thead><tr><th>stream</th><th>state</th><th>rate (Hz)</th>
      <th>dropped</th><th>latency (ms)</th></tr></thead><tbody></tbody></table>
    <canvas class="traces"></canvas>
    <div class="quality"></div>`;
  const panels = [...container.children, panel].sort((a, b) => a.dataset.participant.localeCompare(b.dataset.participant));
  container.replaceChildren(...panels);
  return panel;
}

function streamRow(panel, stream) {
  let row = panel.querySelector(`tr[data-stream="${stream.index}"]`);
  if (!row) {
    row = document.createElement("tr");
    row.className = "stream";
    row.dataset.stream = stream.index;
    row.dataset.streamName = stream.name;
    row.innerHTML = `<td class="name"></td><td class="state"></td><td class="rate"></td>
      <td class="dropped"></td><td class="latency"></td>`;
    row.querySelector(".name").textContent = stream.name;
    panel.querySelector("tbody").append(row);
  }
  return row;
}

function fmt(value, digits) {
  return value === null || value === undefined ? "–" : value.toFixed(digits);
}

function renderStream(stream) {
  const panel = ensurePanel(panelKey(stream));
  const row = streamRow(panel, stream);
  const label = stream.samples === 0 ? "WAITING" : stream.stalled ? "STALLED" : "OK";
  row.dataset.state = label;
  row.querySelector(".state").textContent = label;
  row.querySelector(".rate").textContent = `${fmt(stream.effective_rate, 1)} / ${stream.nominal_rate}`;
  row.querySelector(".dropped").textContent = stream.dropped;
  row.querySelector(".latency").textContent = stream.latency_s === null ? "–" : (1000 * stream.latency_s).toFixed(0);
  if (stream.type !== "EEG") return;
  const quality = panel.querySelector(".quality");
  for (const channel of stream.channels) {
    if (channel.type.toUpperCase() !== "EEG") continue;
    let chip = quality.querySelector(`.chan[data-stream="${stream.index}"][data-label="${CSS.escape(channel.label)}"]`);
    if (!chip) {
      chip = document.createElement("span");
      chip.className = "chan";
      chip.dataset.stream = stream.index;
      chip.dataset.label = channel.label;
      chip.textContent = channel.label;
      chip.title = "click: show or hide this channel";
      chip.onclick = () => toggleChannel(chip);
      quality.append(chip);
    }
    const flags = stream.quality ? stream.quality.flags[channel.label] || [] : [];
    chip.dataset.flags = flags.join(" ");
    const std = stream.quality && stream.quality.std_uv ? stream.quality.std_uv[channel.label] : null;
    chip.title = `${channel.label}: ${flags.join(", ") || "ok"}, SD ${fmt(std, 1)} µV (last ${stream.quality ? stream.quality.window_s : "–"} s)`;
  }
}

function toggleChannel(chip) {
  const key = `${chip.dataset.stream}:${chip.dataset.label}`;
  if (hidden.has(key)) hidden.delete(key);
  else hidden.add(key);
  chip.dataset.hidden = hidden.has(key);
}

function renderStatus(status) {
  for (const stream of status.streams) if (stream.type !== "Synchrony") renderStream(stream);
  renderBlock(status);
  renderRecording(status);
  renderSynchronyInfo(status);
}

// ---------------------------------------------------------------- traces

function visibleRows(panelStreams) {
  const rows = [];
  for (const stream of panelStreams) {
    stream.channels.forEach((channel, c) => {
      if (!hidden.has(`${stream.index}:${channel.label}`)) rows.push({ stream, channel, c });
    });
  }
  return rows;
}

function drawPanel(panel, panelStreams, settings) {
  const canvas = panel.querySelector("canvas.traces");
  const width = canvas.clientWidth;
  const height = canvas.clientHeight;
  if (canvas.width !== width || canvas.height !== height) {
    canvas.width = width;
    canvas.height = height;
  }
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#0b0b0b";
  ctx.fillRect(0, 0, width, height);
  const rows = visibleRows(panelStreams);
  if (!rows.length) return;
  const rowHeight = height / rows.length;
  const labelWidth = 44;
  const plotWidth = width - labelWidth;
  ctx.font = "10px system-ui";
  rows.forEach((row, r) => {
    const ring = traces.get(row.stream.index);
    const mid = rowHeight * (r + 0.5);
    const flags = row.stream.quality ? row.stream.quality.flags[row.channel.label] || [] : [];
    // Red: the channel's data are bad (railed, flat, lasting noise); yellow: line noise only.
    const bad = flags.some((flag) => flag !== "transient" && flag !== "line_noise");
    const color = bad ? "#f77" : flags.includes("line_noise") ? "#dd8" : null;
    ctx.fillStyle = color || "#999";
    ctx.fillText(row.channel.label, 2, mid + 3);
    if (!ring || ring.total === 0) return;
    const nWindow = Math.round(settings.windowS * ring.binRate);
    const available = Math.min(ring.total, ring.capacity, nWindow);
    const first = ring.total - available; // oldest bin drawn
    const stride = ring.nChannels * 2;
    // EEG in µV on the common scale (one scale step per row); other channels fill their row.
    let center = 0;
    let lo = Infinity;
    let hi = -Infinity;
    for (let b = first; b < ring.total; b++) {
      const slot = (b % ring.capacity) * stride + row.c * 2;
      center += ring.data[slot] + ring.data[slot + 1];
      lo = Math.min(lo, ring.data[slot]);
      hi = Math.max(hi, ring.data[slot + 1]);
    }
    center /= 2 * available;
    const isEeg = row.channel.type.toUpperCase() === "EEG";
    const pxPerUnit = isEeg ? rowHeight / settings.scale : (0.8 * rowHeight) / Math.max(hi - lo, 1e-9);
    if (!isEeg) center = (hi + lo) / 2;
    ctx.strokeStyle = color || (isEeg ? "#9fd" : "#cc8");
    ctx.beginPath();
    const binsPerPx = nWindow / plotWidth;
    const startX = labelWidth + plotWidth - available / binsPerPx;
    let x0 = Math.max(Math.floor(startX), labelWidth);
    let begun = false;
    for (let x = x0; x < width; x++) {
      const b0 = first + Math.floor((x - startX) * binsPerPx);
      const b1 = Math.min(first + Math.floor((x + 1 - startX) * binsPerPx), ring.total);
      let mn = Infinity;
      let mx = -Infinity;
      for (let b = Math.max(b0, first); b < Math.max(b1, b0 + 1) && b < ring.total; b++) {
        const slot = (b % ring.capacity) * stride + row.c * 2;
        mn = Math.min(mn, ring.data[slot]);
        mx = Math.max(mx, ring.data[slot + 1]);
      }
      if (mn === Infinity) continue;
      const yTop = mid - (mx - center) * pxPerUnit;
      const yBottom = mid - (mn - center) * pxPerUnit;
      if (!begun) {
        ctx.moveTo(x, yTop);
        begun = true;
      } else ctx.lineTo(x, yTop);
      ctx.lineTo(x, yBottom);
    }
    ctx.stroke();
  });
}

function drawTraces(now) {
  const status = state.status;
  // At most one redraw per MIN_DRAW_INTERVAL_MS: frames come at 20 per second and stream, and a
  // redraw of 2 x 64 traces is the page's main cost.
  if (status && pendingStamps.size && now - lastDraw >= MIN_DRAW_INTERVAL_MS) {
    lastDraw = now;
    const settings = controls();
    const byPanel = new Map();
    for (const stream of status.streams) {
      if (stream.type === "Synchrony") continue;
      const key = panelKey(stream);
      if (!byPanel.has(key)) byPanel.set(key, []);
      byPanel.get(key).push(stream);
    }
    for (const [key, panelStreams] of byPanel) {
      const panel = document.getElementById(`participant-${key}`);
      if (panel) drawPanel(panel, panelStreams, settings);
    }
    state.draws++;
    if (state.clockOffset !== null) {
      const drawnLsl = performance.now() / 1000 + state.clockOffset;
      for (const stamp of pendingStamps.values()) state.drawDelays.push(drawnLsl - stamp);
      if (state.drawDelays.length > 200000) state.drawDelays.splice(0, 100000);
    }
    pendingStamps = new Map();
  }
  requestAnimationFrame(drawTraces);
}

// ---------------------------------------------------------------- block and markers

function describeDuration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const s = Math.max(0, Math.round(seconds));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

function renderBlock(status) {
  const block = status.block;
  document.getElementById("block-name").textContent = block ? block.block || "(unnamed block)" : "no block running";
  document.getElementById("block-task").textContent = block ? `${block.task || ""} · ${block.condition || ""}` : "";
  document.getElementById("block-elapsed").textContent = block ? describeDuration(block.elapsed_s) : "–";
  document.getElementById("block-remaining").textContent = block ? describeDuration(block.remaining_s) : "–";
  document.getElementById("block-trials").textContent = block ? `${block.trials_ended}/${block.trials_started}` : "–";
  if (!status.new_markers.length) return;
  const list = document.getElementById("marker-list");
  for (const event of status.new_markers) {
    const item = document.createElement("li");
    const where = event.block ? ` ${event.block}` : "";
    item.textContent = `${describeDuration(event.stamp - markerEvents[0].stamp)} ${event.event}${where}`;
    list.prepend(item);
  }
  while (list.children.length > 200) list.lastChild.remove();
  renderTimeline(status.now);
}

function renderTimeline(now) {
  const timeline = document.getElementById("timeline");
  if (!markerEvents.length) return;
  const origin = markerEvents[0].stamp;
  const span = Math.max(now - origin, 1);
  const segments = [];
  let open = null;
  for (const event of markerEvents) {
    if (event.event === "block_start") open = event;
    else if (event.event === "block_end" && open) {
      segments.push([open, event.stamp]);
      open = null;
    }
  }
  if (open) segments.push([open, now]);
  timeline.replaceChildren(
    ...segments.map(([start, end]) => {
      const div = document.createElement("div");
      div.className = "seg";
      div.style.left = `${(100 * (start.stamp - origin)) / span}%`;
      div.style.width = `${(100 * (end - start.stamp)) / span}%`;
      div.textContent = start.block || start.task || "";
      div.title = `${start.block} (${start.condition})`;
      return div;
    }),
  );
}

// ---------------------------------------------------------------- recording

function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "kB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) {
    n /= 1000;
    i++;
  }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function renderRecording(status) {
  const rec = status.recording;
  if (rec) {
    document.getElementById("rec-path").textContent = rec.exists ? rec.path : `${rec.path} (not there yet)`;
    document.getElementById("rec-size").textContent = bytes(rec.size_bytes);
    document.getElementById("rec-free").textContent = bytes(rec.free_bytes);
  }
  const body = document.querySelector("#rec-streams tbody");
  body.replaceChildren(
    ...status.streams.map((stream) => {
      const row = document.createElement("tr");
      row.dataset.streamName = stream.name;
      for (const value of [stream.name, stream.samples, stream.dropped]) {
        const cell = document.createElement("td");
        cell.textContent = value;
        row.append(cell);
      }
      return row;
    }),
  );
}

// ---------------------------------------------------------------- synchrony

function addSynchrony(sync) {
  syncHistory.labels = sync.labels;
  sync.stamps.forEach((stamp, i) => {
    syncHistory.stamps.push(stamp);
    syncHistory.values.push(sync.values[i]);
  });
  const keep = syncHistory.stamps.length - 3600;
  if (keep > 0) {
    syncHistory.stamps.splice(0, keep);
    syncHistory.values.splice(0, keep);
  }
  const last = syncHistory.values[syncHistory.values.length - 1];
  if (last) sync.labels.forEach((label, i) => (state.synchrony[label] = last[i]));
  renderSynchronyTable();
  drawSynchrony();
}

function renderSynchronyInfo(status) {
  const stream = status.streams.find((s) => s.type === "Synchrony");
  const info = document.getElementById("sync-info");
  if (!stream) return;
  const meta = stream.metadata || {};
  const state = stream.stalled ? "STALLED" : stream.samples ? "live" : "waiting";
  info.dataset.state = state;
  info.textContent = `${stream.name}: ${state}, window ${meta.window_s || "?"} s, step ${meta.step_s || "?"} s`;
}

function renderSynchronyTable() {
  const body = document.querySelector("#sync-table tbody");
  for (const band of BANDS) {
    if (!(`plv_${band}` in state.synchrony) && !(`envcorr_${band}` in state.synchrony)) continue;
    let row = body.querySelector(`tr[data-band="${band}"]`);
    if (!row) {
      row = document.createElement("tr");
      row.dataset.band = band;
      const cells = [`<th>${band}</th>`];
      for (const metric of METRICS)
        cells.push(`<td data-channel="${metric}_${band}"></td><td data-channel="${metric}_${band}_chance"></td>`);
      row.innerHTML = cells.join("");
      body.append(row);
    }
    for (const metric of METRICS) {
      const value = state.synchrony[`${metric}_${band}`];
      const chance = state.synchrony[`${metric}_${band}_chance`];
      const cell = row.querySelector(`td[data-channel="${metric}_${band}"]`);
      cell.textContent = fmt(value, 3);
      cell.classList.toggle("above", value !== null && chance !== null && value > chance);
      row.querySelector(`td[data-channel="${metric}_${band}_chance"]`).textContent = fmt(chance, 3);
    }
  }
}

function drawSynchrony() {
  const canvas = document.getElementById("sync-canvas");
  const width = (canvas.width = canvas.clientWidth);
  const height = (canvas.height = canvas.clientHeight);
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, width, height);
  if (!syncHistory.stamps.length) return;
  const newest = syncHistory.stamps[syncHistory.stamps.length - 1];
  const bandHeight = height / BANDS.length;
  const column = (label) => syncHistory.labels.indexOf(label);
  ctx.font = "11px system-ui";
  BANDS.forEach((band, r) => {
    const top = r * bandHeight;
    // -0.5..1: PLV is 0..1, an envelope correlation can be negative.
    const y = (v) => top + bandHeight - 4 - ((Math.max(-0.5, Math.min(1, v)) + 0.5) / 1.5) * (bandHeight - 10);
    ctx.strokeStyle = "#333";
    ctx.strokeRect(0, top, width, bandHeight);
    ctx.beginPath();
    ctx.moveTo(0, y(0));
    ctx.lineTo(width, y(0));
    ctx.stroke();
    ctx.fillStyle = "#aaa";
    ctx.fillText(band, 4, top + 12);
    for (const metric of METRICS) {
      for (const [suffix, dash] of [["", []], ["_chance", [4, 4]]]) {
        const c = column(`${metric}_${band}${suffix}`);
        if (c < 0) continue;
        ctx.strokeStyle = COLORS[metric];
        ctx.setLineDash(dash);
        ctx.beginPath();
        let begun = false;
        syncHistory.stamps.forEach((stamp, i) => {
          const v = syncHistory.values[i][c];
          if (v === null || newest - stamp > SYNC_WINDOW_S) return;
          const x = width * (1 - (newest - stamp) / SYNC_WINDOW_S);
          if (begun) ctx.lineTo(x, y(v));
          else ctx.moveTo(x, y(v));
          begun = true;
        });
        ctx.stroke();
      }
    }
    ctx.setLineDash([]);
  });
}

// ---------------------------------------------------------------- start

document.getElementById("filter").onchange = sendFilter;
setInterval(pingClock, 10000);
connect();
requestAnimationFrame(drawTraces);
