"""GET /: the task's live page, one self-contained HTML document (no CDN, no build step, no library).

It reads the endpoint's own JSON (/info, /status, /metrics, /metrics/history) and draws CPU and memory
from the history, asking only for the samples it has not seen (``since=``), once per sample interval.
Once the task has ended it shows the final state and stops asking for samples.
"""

PAGE = b"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>horizon task</title>
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; background: #fafafa; }
  h1 { font-size: 1.3em; margin: 0 0 .3em; }
  .facts { display: flex; flex-wrap: wrap; gap: .4em 1.6em; margin-bottom: 1em; }
  .facts span b { font-weight: 600; }
  .state { padding: .1em .5em; border-radius: .3em; background: #ddd; }
  .state.running { background: #c8f0c8; } .state.paused { background: #fff0b0; }
  .state.failed { background: #f6c4c4; } .state.exited, .state.stopped { background: #dde4f0; }
  .charts { display: flex; flex-wrap: wrap; gap: 1em; }
  figure { margin: 0; background: #fff; border: 1px solid #ddd; padding: .5em; }
  figcaption { font-size: .9em; color: #555; }
  canvas { display: block; }
  table { border-collapse: collapse; margin-top: 1em; background: #fff; }
  th, td { border: 1px solid #ddd; padding: .2em .6em; text-align: right; }
  th:nth-child(2), td:nth-child(2), td:nth-child(3) { text-align: left; }
  #error { color: #a00; }
</style>
</head>
<body>
<h1 id="title">horizon task</h1>
<div class="facts">
  <span>state <b id="state" class="state">?</b></span>
  <span>image <b id="image">?</b></span>
  <span>host <b id="host">?</b></span>
  <span>uptime <b id="uptime">?</b></span>
  <span>restarts <b id="restarts">?</b></span>
  <span>exit code <b id="exit_code">-</b></span>
  <span>sample <b id="seq">-</b></span>
  <span>CPU <b id="cpu">-</b></span>
  <span>memory <b id="memory">-</b></span>
</div>
<div id="error"></div>
<div class="charts">
  <figure><figcaption>CPU, % of one core</figcaption><canvas id="cpu_chart" width="520" height="160"></canvas></figure>
  <figure><figcaption>memory, MB</figcaption><canvas id="memory_chart" width="520" height="160"></canvas></figure>
</div>
<table id="processes">
  <thead><tr><th>pid</th><th>name</th><th>command</th><th>CPU %</th><th>RSS MB</th><th>threads</th></tr></thead>
  <tbody></tbody>
</table>
<script>
"use strict";
const FINAL = ["exited", "failed", "stopped"];
const KEEP = 600;
let samples = [], last = 0, interval = 1, ended = false;

const $ = (id) => document.getElementById(id);
const mb = (bytes) => (bytes / 1048576).toFixed(1);
async function get(path) {
  const response = await fetch(path, {cache: "no-store"});
  if (!response.ok) throw new Error(path + ": HTTP " + response.status);
  return response.json();
}
function duration(seconds) {
  const s = Math.floor(seconds), d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600);
  const m = Math.floor(s % 3600 / 60);
  return (d ? d + "d " : "") + (h ? h + "h " : "") + (m ? m + "m " : "") + (s % 60) + "s";
}
function chart(canvas, values, format) {
  const g = canvas.getContext("2d"), w = canvas.width, h = canvas.height;
  g.clearRect(0, 0, w, h);
  if (!values.length) return;
  const top = Math.max(1e-9, ...values) * 1.1;
  g.strokeStyle = "#ccc"; g.beginPath(); g.moveTo(0, h - 0.5); g.lineTo(w, h - 0.5); g.stroke();
  g.fillStyle = "#777"; g.font = "11px sans-serif"; g.fillText(format(top), 4, 12);
  g.strokeStyle = "#2a6fdb"; g.lineWidth = 1.5; g.beginPath();
  values.forEach((v, i) => {
    const x = values.length > 1 ? i * (w - 1) / (values.length - 1) : w - 1, y = h - 1 - v / top * (h - 16);
    if (i) g.lineTo(x, y); else g.moveTo(x, y);
  });
  g.stroke();
}
function showStatus(status) {
  const state = $("state");
  state.textContent = status.state; state.className = "state " + status.state;
  $("uptime").textContent = duration(status.uptime_s || 0);
  $("restarts").textContent = status.restarts;
  $("exit_code").textContent = status.exit_code === null ? "-" : status.exit_code;
  ended = FINAL.includes(status.state);
}
function showMetrics(metrics) {
  $("seq").textContent = metrics.seq;
  $("cpu").textContent = metrics.container.cpu_percent.toFixed(1) + " %";
  $("memory").textContent = mb(metrics.container.memory_bytes) + " MB";
  const rows = metrics.processes.slice().sort((a, b) => b.cpu_percent - a.cpu_percent).map((p) => {
    const tr = document.createElement("tr");
    [p.pid, p.name, (p.cmdline || []).join(" "), p.cpu_percent.toFixed(1), mb(p.rss_bytes), p.threads]
      .forEach((v) => { const td = document.createElement("td"); td.textContent = v; tr.appendChild(td); });
    return tr;
  });
  $("processes").tBodies[0].replaceChildren(...rows);
}
async function refresh() {
  try {
    const [status, history] = await Promise.all([get("status"), get("metrics/history?since=" + last)]);
    showStatus(status);
    interval = history.interval || interval;
    samples = samples.concat(history.samples).slice(-KEEP);
    if (samples.length) last = samples[samples.length - 1].seq;
    chart($("cpu_chart"), samples.map((s) => s.cpu_percent), (v) => v.toFixed(1) + " %");
    chart($("memory_chart"), samples.map((s) => s.memory_bytes / 1048576), (v) => v.toFixed(1) + " MB");
    showMetrics(await get("metrics"));
    $("error").textContent = "";
  } catch (error) {
    $("error").textContent = ended ? "" : "the endpoint does not answer: " + error.message;
  }
  if (!ended) setTimeout(refresh, Math.max(500, interval * 1000));
}
get("info").then((answer) => {
  const info = answer.info || {};
  $("title").textContent = info.service + "/" + info.task;
  document.title = info.service + "/" + info.task + " - horizon";
  $("image").textContent = info.image; $("host").textContent = info.host;
}).catch(() => {});
refresh();
</script>
</body>
</html>
"""
