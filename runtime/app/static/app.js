"use strict";
// locore-edge visual search page: plain JavaScript, no build step. Talks to /api/*.
const $ = (id) => document.getElementById(id);
let state = { info: null, query: null, selected: null };

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

async function api(path, options) {
  let response;
  try {
    response = await fetch(path, options);
  } catch (err) {
    throw new Error("the server cannot be reached (" + err + ")");
  }
  let body = null;
  try { body = await response.json(); } catch (err) { body = null; }
  if (!response.ok) {
    throw new Error((body && body.error) || ("HTTP " + response.status + " " + response.statusText));
  }
  return body;
}

function thumb(kind, id, size) {
  return "/api/image/" + kind + "/" + encodeURIComponent(id) + "?size=" + (size || 160);
}

async function loadInfo() {
  const info = await api("/api/info");
  state.info = info;
  const idx = info.index;
  const model = info.model ? info.model.name + " (" + info.model.backend + ", " +
    info.model.num_desc + " x " + info.model.desc_dim + "-d)" : "none (global search only)";
  $("info").textContent = idx.images + " images, global search " + idx.global_search +
    ", shortlist " + info.shortlist + ", re-ranker: " + model;
  const lim = info.limits;
  $("limits").textContent = "JPEG, PNG, BMP or WebP; at most " +
    Math.round(lim.max_upload_bytes / 1048576) + " MB, at least " + lim.min_side + " px a side";
  if (!info.model) $("after-title").textContent = "Re-ranked (no model loaded)";
  if (info.samples.length) {
    $("samples-box").hidden = false;
    for (const s of info.samples) {
      const img = document.createElement("img");
      img.src = thumb("sample", s.id, 112); img.title = s.name; img.alt = s.name;
      img.className = "sample";
      img.onclick = () => runSearch({ sample: s.id });
      $("samples").appendChild(img);
    }
  }
  const gal = await api("/api/gallery?limit=40");
  for (const g of gal.images) {
    const img = document.createElement("img");
    img.src = thumb("gallery", g.id, 112); img.title = g.name; img.alt = g.name;
    img.onclick = () => runSearch({ gallery: g.id });
    $("gallery").appendChild(img);
  }
}

async function runSearch(fields) {
  showError("");
  const form = new FormData();
  for (const [k, v] of Object.entries(fields)) form.append(k, v);
  form.append("top", "10");
  $("search-button").disabled = true;
  try {
    const result = await api("/api/search", { method: "POST", body: form });
    render(result);
  } catch (err) {
    showError(err.message);
  } finally {
    $("search-button").disabled = false;
  }
}

function card(row, beforeRank) {
  const li = document.createElement("li");
  li.dataset.id = row.id;
  const img = document.createElement("img");
  img.src = thumb("gallery", row.id, 160); img.alt = row.name;
  li.appendChild(img);
  let move = "";
  if (beforeRank !== undefined) {
    const d = beforeRank - row.rank;
    move = d > 0 ? ' <span class="up">▲' + d + "</span>" : d < 0 ? ' <span class="down">▼' + (-d) + "</span>" : "";
  }
  const text = document.createElement("div");
  text.innerHTML = "#" + row.rank + move + " " + row.score.toFixed(3) +
    "<br>global " + row.global_sim.toFixed(3) + "<br>" + row.name.replace(/[<>&]/g, "");
  li.appendChild(text);
  li.onclick = () => showMatch(row.id, row.name);
  return li;
}

function render(result) {
  state.query = result.query;
  $("query-view").hidden = false;
  $("query-img").src = thumb("query", result.query, 240);
  $("query-label").textContent = result.label + " (" + result.size[1] + "x" + result.size[0] +
    ", " + result.query_keypoints + " local descriptors)";
  $("results").hidden = false;
  const t = result.timings_ms;
  $("timings").textContent = Object.entries(t).map(([k, v]) => k.replace("_ms", "") + " " + v.toFixed(1) + " ms").join(" · ");
  const before = $("before"), after = $("after");
  before.innerHTML = ""; after.innerHTML = "";
  for (const row of result.shortlist.slice(0, 10)) before.appendChild(card(row));
  if (result.reranked) {
    for (const row of result.reranked) after.appendChild(card(row, row.global_rank));
  } else {
    after.innerHTML = "<li>no re-ranker loaded</li>";
  }
  const first = (result.reranked || result.shortlist)[0];
  if (first) showMatch(first.id, first.name);
}

function loadImage(src) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error("cannot load " + src));
    img.src = src;
  });
}

function logitColor(v) {
  if (v === null || v === undefined) return "rgba(128,128,128,0.8)";
  const p = 1 / (1 + Math.exp(-v));
  return "rgb(" + Math.round(230 * (1 - p)) + "," + Math.round(200 * p) + ",40)";
}

async function showMatch(galleryId, name) {
  const canvas = $("match-view");
  canvas.dataset.ready = "false";
  for (const li of document.querySelectorAll("ol.results li")) {
    li.classList.toggle("selected", Number(li.dataset.id) === galleryId);
  }
  try {
    const m = await api("/api/match?query=" + encodeURIComponent(state.query) + "&gallery=" + galleryId);
    const [qi, gi] = await Promise.all([loadImage(thumb("query", state.query, 480)), loadImage(thumb("gallery", galleryId, 480))]);
    $("match-section").hidden = false;
    $("match-title").textContent = "query ↔ " + name + " (" + m.matches.length + " mutual matches)";
    $("match-note").textContent = m.note;
    const H = 400, gap = 20;
    const qw = qi.width * H / qi.height, gw = gi.width * H / gi.height;
    canvas.width = Math.round(qw + gap + gw); canvas.height = H;
    const ctx = canvas.getContext("2d");
    ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, canvas.width, H);
    ctx.drawImage(qi, 0, 0, qw, H);
    ctx.drawImage(gi, qw + gap, 0, gw, H);
    ctx.lineWidth = 1.5;
    for (const match of m.matches) {
      const a = Math.max(0.15, Math.min(1, (match.cos - 0.5) * 2));
      ctx.strokeStyle = "rgba(255,200,0," + a + ")";
      ctx.beginPath();
      ctx.moveTo(match.q_xy[0] * qw, match.q_xy[1] * H);
      ctx.lineTo(qw + gap + match.g_xy[0] * gw, match.g_xy[1] * H);
      ctx.stroke();
    }
    const logits = m.token_logits;
    const dot = (x, y, color) => {
      ctx.fillStyle = color; ctx.strokeStyle = "#000"; ctx.lineWidth = 1.5;
      ctx.beginPath(); ctx.arc(x, y, 5, 0, 2 * Math.PI); ctx.fill(); ctx.stroke();
    };
    m.query_valid.forEach((row, k) => dot(m.query_points[k][0] * qw, m.query_points[k][1] * H, "rgba(31,111,235,0.8)"));
    m.gallery_valid.forEach((row, k) => dot(qw + gap + m.gallery_points[k][0] * gw, m.gallery_points[k][1] * H, logits ? logitColor(logits.gallery[row]) : "rgba(31,111,235,0.8)"));
    canvas.dataset.ready = "true";
    canvas.dataset.matches = String(m.matches.length);
    canvas.dataset.shown = m.shown;
  } catch (err) {
    showError(err.message);
  }
}

$("upload-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const file = $("file").files[0];
  if (!file) { showError("choose an image file first"); return; }
  runSearch({ image: file });
});

loadInfo().catch((err) => showError("cannot load the index: " + err.message));
