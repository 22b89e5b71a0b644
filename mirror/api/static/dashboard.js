// registry-mirror storage dashboard: reads the /mirror/v1 JSON endpoints and draws
// plain SVG and tables. No framework, no external requests (the page's CSP forbids them).
"use strict";

(() => {
  const REFRESH_MS = 5000;
  const TOKEN_KEY = "registry-mirror.api-token";
  const MAX_REGISTRIES = 12;
  const MAX_LAYERS = 10;
  const MAX_RECLAIMABLE = 8;
  const MAX_DELETIONS = 10;
  const SVG_NS = "http://www.w3.org/2000/svg";

  const byTestId = (id) => document.querySelector(`[data-testid="${id}"]`);

  // ---- fetching -------------------------------------------------------------

  class AuthNeeded extends Error {}

  async function getJSON(path) {
    const headers = { Accept: "application/json" };
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = `Bearer ${token}`;
    const response = await fetch(path, { headers, cache: "no-store" });
    if (response.status === 401) throw new AuthNeeded(path);
    if (!response.ok) {
      let message = `HTTP ${response.status}`;
      try {
        const body = await response.json();
        if (body && body.message) message = body.message;
      } catch (_) { /* not JSON: keep the status */ }
      const error = new Error(`${path}: ${message}`);
      error.status = response.status;
      throw error;
    }
    return response.json();
  }

  // ---- formatting -----------------------------------------------------------

  const UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];

  function num(value) {
    const n = Number(value);
    return Number.isFinite(n) ? n : 0;
  }

  function formatBytes(value) {
    let n = num(value);
    let unit = 0;
    while (Math.abs(n) >= 1024 && unit < UNITS.length - 1) {
      n /= 1024;
      unit += 1;
    }
    return unit === 0 ? `${n} B` : `${n.toFixed(1)} ${UNITS[unit]}`;
  }

  function formatCount(value) {
    return num(value).toLocaleString("en-US");
  }

  function formatRatio(value) {
    return `${num(value).toFixed(2)}×`;
  }

  function formatAgo(iso) {
    if (!iso) return "never";
    const then = Date.parse(iso);
    if (Number.isNaN(then)) return iso;
    const seconds = Math.max(0, Math.round((Date.now() - then) / 1000));
    if (seconds < 60) return `${seconds} s ago`;
    if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
    if (seconds < 86400) return `${Math.round(seconds / 3600)} h ago`;
    return `${Math.round(seconds / 86400)} d ago`;
  }

  function formatDuration(seconds) {
    if (seconds === undefined || seconds === null || seconds === "") return "–";
    const s = num(seconds);
    if (s < 1) return `${Math.round(s * 1000)} ms`;
    if (s < 120) return `${s.toFixed(1)} s`;
    return `${Math.round(s / 60)} min`;
  }

  function shortDigest(digest) {
    if (!digest) return "";
    const [algo, hex] = digest.includes(":") ? digest.split(":", 2) : ["", digest];
    return algo ? `${algo}:${hex.slice(0, 12)}…` : `${hex.slice(0, 12)}…`;
  }

  const FORMATTERS = { bytes: formatBytes, count: formatCount, ratio: formatRatio };

  // A figure element shows the formatted value and keeps the exact one in data-value.
  function setFigure(testId, value) {
    const element = byTestId(testId);
    if (!element) return;
    const present = value !== undefined && value !== null;
    const format = FORMATTERS[element.dataset.kind] || String;
    element.textContent = present ? format(value) : "–";
    element.dataset.value = present ? String(value) : "";
    element.title = present && element.dataset.kind === "bytes" ? `${formatCount(value)} bytes` : "";
  }

  // ---- DOM helpers ------------------------------------------------------------

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (value === undefined || value === null) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("data-")) node.setAttribute(key, String(value));
      else node[key] = value;
    }
    for (const child of children) if (child) node.append(child);
    return node;
  }

  function svg(tag, attrs = {}, text) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function emptyRow(tbody, columns, message) {
    tbody.replaceChildren(el("tr", {}, el("td", { colSpan: columns, class: "empty", text: message })));
  }

  // ---- totals -------------------------------------------------------------------

  function renderTotals(stats) {
    setFigure("stat-images", stats.images);
    setFigure("stat-blobs", stats.blobs);
    setFigure("stat-logical-bytes", stats.logicalBytes);
    setFigure("stat-compressed-bytes", stats.compressedBytes);
    setFigure("stat-stored-bytes", stats.storedBytes);
    setFigure("stat-saved-bytes", stats.savedBytes);
    setFigure("stat-dedup-ratio", stats.dedupRatio);
    setFigure("stat-reclaimable-bytes", stats.reclaimableBytes);
    renderRing(num(stats.storedBytes), num(stats.savedBytes), num(stats.dedupRatio));
    renderAsOf(stats.asOf, stats.behind);
  }

  // Where the folded figures stand (docs/STATS.md: asOf and behind).
  function renderAsOf(asOf, behind) {
    const element = byTestId("stats-as-of");
    if (!element || !asOf) return;
    const pending = behind ? num(behind.changes) : 0;
    element.textContent =
      `figures as of event ${asOf.eventId}` +
      (pending ? ` · ${formatCount(pending)} change${pending === 1 ? "" : "s"} behind` : " · up to date");
    element.dataset.eventId = asOf.eventId;
    element.dataset.behind = String(pending);
  }

  // A ring: the logical bytes split into stored and saved.
  function renderRing(stored, saved, ratio) {
    const ring = byTestId("dedup-ring");
    const radius = 48;
    const circumference = 2 * Math.PI * radius;
    const total = stored + saved;
    const savedShare = total > 0 ? saved / total : 0;
    const common = { cx: 60, cy: 60, r: radius, fill: "none", "stroke-width": 16 };
    ring.replaceChildren(
      svg("circle", { ...common, stroke: "#2563eb" }),
      svg("circle", {
        ...common,
        stroke: "#10b981",
        "stroke-dasharray": `${(savedShare * circumference).toFixed(2)} ${circumference.toFixed(2)}`,
        transform: "rotate(-90 60 60)",
      }),
      svg("text", { x: 60, y: 62, "text-anchor": "middle", class: "center" }, total > 0 ? formatRatio(ratio) : "–"),
      svg("text", { x: 60, y: 78, "text-anchor": "middle", class: "caption" }, "dedup"),
    );
    ring.dataset.savedShare = savedShare.toFixed(4);
  }

  // ---- per registry ---------------------------------------------------------------

  function renderRegistries(rows) {
    const chart = byTestId("registry-chart");
    if (!rows.length) {
      chart.replaceChildren(el("p", { class: "empty", text: "no registries mirrored yet" }));
      return;
    }
    rows.sort((a, b) => num(b.logicalBytes) - num(a.logicalBytes) || a.registryId.localeCompare(b.registryId));
    const shown = rows.slice(0, MAX_REGISTRIES);
    const maxLogical = Math.max(1, ...shown.map((r) => num(r.logicalBytes)));
    // Drawn at the panel's own width, so the text is at the page's size.
    const width = Math.max(560, Math.round(chart.clientWidth || 960));
    const labelWidth = 190;
    const valueWidth = 250;
    const barArea = width - labelWidth - valueWidth - 20;
    const rowHeight = 30;
    const height = shown.length * rowHeight + (rows.length > shown.length ? 22 : 4);
    const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "stored versus logical bytes per registry" });
    shown.forEach((row, index) => {
      const y = index * rowHeight;
      const logical = num(row.logicalBytes);
      const stored = num(row.storedBytes);
      const group = svg("g", {
        "data-testid": "registry-row",
        "data-registry-id": row.registryId,
        "data-logical-bytes": String(row.logicalBytes ?? ""),
        "data-stored-bytes": String(row.storedBytes ?? ""),
      });
      group.append(
        svg("text", { x: 0, y: y + 19, class: "label mono" }, row.label || row.registryId),
        svg("rect", { x: labelWidth, y: y + 6, height: 18, rx: 3, class: "bar-logical", width: Math.max(2, (logical / maxLogical) * barArea).toFixed(1) }),
        svg("rect", { x: labelWidth, y: y + 6, height: 18, rx: 3, class: "bar-stored", width: Math.max(stored > 0 ? 2 : 0, (stored / maxLogical) * barArea).toFixed(1) }),
        svg(
          "text",
          { x: labelWidth + barArea + 14, y: y + 19, class: "value" },
          `${formatBytes(stored)} of ${formatBytes(logical)} · ${formatRatio(row.dedupRatio ?? (stored > 0 ? logical / stored : 0))}`,
        ),
      );
      const title = svg("title", {}, `${row.registryId}: ${formatCount(row.images ?? 0)} images, stored ${formatCount(stored)} B of ${formatCount(logical)} B logical`);
      group.append(title);
      root.append(group);
    });
    if (rows.length > shown.length) {
      root.append(svg("text", { x: 0, y: height - 6, class: "more" }, `and ${rows.length - shown.length} more registries`));
    }
    chart.replaceChildren(root);
  }

  // ---- layers and reclaimable blobs -------------------------------------------------

  // `repositories` names a few of them; `repositoryCount` counts them all.
  function repositoriesOf(layer) {
    const names = Array.isArray(layer.repositories) ? layer.repositories : [];
    const count = layer.repositoryCount !== undefined ? num(layer.repositoryCount) : names.length;
    const more = count > names.length ? `\n… and ${formatCount(count - names.length)} more` : "";
    return { count, names: names.join("\n") + more };
  }

  function renderLayers(layers) {
    const tbody = byTestId("layers-table").tBodies[0];
    if (!layers.length) {
      emptyRow(tbody, 5, "no shared layers yet");
      return;
    }
    const shown = layers.slice(0, MAX_LAYERS);
    const maxSaved = Math.max(1, ...shown.map((l) => num(l.savedBytes)));
    tbody.replaceChildren(
      ...shown.map((layer) => {
        const repos = repositoriesOf(layer);
        const bar = el("span", { class: "saved-bar" });
        bar.style.width = `${Math.max(2, (num(layer.savedBytes) / maxSaved) * 90)}px`;
        return el(
          "tr",
          {
            "data-testid": "layer-row",
            "data-digest": layer.digest,
            "data-saved-bytes": layer.savedBytes,
            "data-ref-count": layer.refCount,
          },
          el("td", { class: "mono", text: shortDigest(layer.digest), title: layer.digest }),
          el("td", { class: "num", text: formatBytes(layer.size) }),
          el("td", { class: "num", text: formatCount(layer.refCount) }),
          el("td", { class: "num", text: formatCount(repos.count), title: repos.names }),
          el("td", { class: "num saved-col" }, bar, el("span", { class: "saved-text", text: formatBytes(layer.savedBytes) })),
        );
      }),
    );
  }

  function renderReclaimable(blobs, count) {
    setFigure("reclaimable-count", count);
    const tbody = byTestId("reclaimable-table").tBodies[0];
    if (!blobs.length) {
      emptyRow(tbody, 3, "nothing to reclaim");
      return;
    }
    tbody.replaceChildren(
      ...blobs.slice(0, MAX_RECLAIMABLE).map((blob) =>
        el(
          "tr",
          { "data-testid": "reclaimable-row", "data-digest": blob.digest, "data-size": blob.size },
          el("td", { class: "mono", text: shortDigest(blob.digest), title: blob.digest }),
          el("td", { class: "num", text: formatBytes(blob.size) }),
          el("td", { class: "num", text: formatAgo(blob.orphanedAt) }),
        ),
      ),
    );
  }

  // ---- sync ---------------------------------------------------------------------------

  // /mirror/v1/sync gives lastError only while it is newer than the last complete walk.
  // A suspect walk (the deletion guard held its deletions back) is shown as such.
  function scopeState(scope) {
    if (scope.lastError !== undefined) return scope.lastRun && scope.lastRun.suspect ? "suspect" : "error";
    if (!scope.lastCompleteAt) return "running";
    return "ok";
  }

  function stateText(state, scope) {
    if (state === "suspect") return "suspect walk · nothing deleted";
    if (state === "error") return "failing";
    if (state === "running") return scope.walking ? "first walk…" : "not walked yet";
    return scope.walking ? "in sync · walking" : "in sync";
  }

  function renderSync(sync) {
    const scopes = sync.scopes || [];
    const tbody = byTestId("sync-table").tBodies[0];
    const pill = byTestId("sync-status");
    if (!scopes.length) {
      emptyRow(tbody, 5, "no scope walked yet");
      pill.textContent = "no scopes yet";
      pill.dataset.state = "running";
      return;
    }
    const states = scopes.map(scopeState);
    const rows = [];
    scopes.forEach((scope, index) => {
      const state = states[index];
      rows.push(
        el(
          "tr",
          { "data-testid": "sync-row", "data-scope": scope.scope, "data-state": state },
          el("td", { class: "mono", text: scope.scope }),
          el("td", { class: `state-${state}`, text: stateText(state, scope) }),
          el("td", { class: "num", text: formatAgo(scope.lastCompleteAt), title: scope.lastCompleteAt || "" }),
          el("td", { class: "num", text: formatDuration(scope.lastDurationSeconds) }),
          el("td", { class: "num", text: scope.lastImages === undefined ? "–" : formatCount(scope.lastImages) }),
        ),
      );
      if (state === "error" || state === "suspect") {
        rows.push(el("tr", {}, el("td", { colSpan: 5, class: "error-text", text: scope.lastError || "the last walk failed" })));
      }
    });
    tbody.replaceChildren(...rows);
    const failing = states.filter((s) => s === "error" || s === "suspect").length;
    const pending = states.filter((s) => s === "running").length;
    if (failing) {
      pill.textContent = `${failing} of ${scopes.length} scopes failing`;
      pill.dataset.state = "error";
    } else if (pending) {
      pill.textContent = `first walk: ${scopes.length - pending} of ${scopes.length} scopes done`;
      pill.dataset.state = "running";
    } else {
      pill.textContent = `in sync · ${scopes.length} scope${scopes.length === 1 ? "" : "s"}`;
      pill.dataset.state = "ok";
    }
  }

  // ---- deletions --------------------------------------------------------------------

  function renderDeletions(events) {
    const list = byTestId("deletions-list");
    if (!events.length) {
      list.replaceChildren(el("li", { class: "empty", text: "no deletions yet" }));
      return;
    }
    list.replaceChildren(
      ...events.map((event) => {
        const image = (event.data && event.data.image) || {};
        const tags = image.tags && image.tags.length ? ` · ${image.tags.join(", ")}` : " · untagged";
        return el(
          "li",
          { "data-testid": "deletion-row", "data-event-id": event.id, "data-subject": event.subject },
          el("span", { class: "what mono", text: image.name || event.subject, title: image.digest || "" }),
          el("span", { class: "when", text: formatAgo(event.time), title: event.time }),
          el("span", { class: "detail mono", text: `${event.subject}${image.name ? tags : ""}` }),
          el("span", { class: "reason", text: (event.data && event.data.reason) || "" }),
        );
      }),
    );
  }

  // Deletions are loaded once (/dashboard/deletions: the latest ones and a cursor), then
  // followed live on the event stream (Server-Sent Events read with fetch, which can send
  // the token; EventSource cannot). A dropped stream is resumed from the last event's id.
  const DELETIONS_STREAM = "/mirror/v1/events/stream?type=registry.image.deleted";
  let deletions = null;
  let deletionsCursor = null;
  let deletionsStream = null;

  function onStreamBlock(block) {
    let id = null;
    const data = [];
    for (const line of block.split("\n")) {
      if (line.startsWith("id:")) id = line.slice(3).trim();
      else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
    }
    if (!data.length) return;  // a heartbeat or the retry preamble
    if (id) deletionsCursor = id;
    deletions = [JSON.parse(data.join("\n")), ...deletions].slice(0, MAX_DELETIONS);
    renderDeletions(deletions);
  }

  async function followDeletions() {
    if (deletionsStream || deletionsCursor === null) return;
    const controller = new AbortController();
    deletionsStream = controller;
    try {
      const headers = { Accept: "text/event-stream", "Last-Event-ID": deletionsCursor };
      const token = sessionStorage.getItem(TOKEN_KEY);
      if (token) headers.Authorization = `Bearer ${token}`;
      const response = await fetch(DELETIONS_STREAM, { headers, cache: "no-store", signal: controller.signal });
      if (!response.ok || !response.body) return;
      document.body.dataset.deletionsLive = "true";
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value.replace(/\r\n?/g, "\n");
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          onStreamBlock(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
        }
      }
    } catch (_) {
      /* dropped: the refresh loop starts it again from the cursor */
    } finally {
      deletionsStream = null;
      document.body.dataset.deletionsLive = "false";
    }
  }

  async function loadDeletions() {
    if (deletions !== null) return;
    const answer = await getJSON("/dashboard/deletions");
    deletions = answer.events || [];
    deletionsCursor = answer.next || "0";
    renderDeletions(deletions);
  }

  // ---- the refresh loop ---------------------------------------------------------------

  function showError(message) {
    const banner = byTestId("error-banner");
    banner.textContent = message || "";
    banner.hidden = !message;
  }

  function askForToken() {
    const pill = byTestId("sync-status");
    pill.textContent = "token needed";
    pill.dataset.state = "unknown";
    const form = byTestId("auth-form");
    form.hidden = false;
    form.querySelector("input").focus();
  }

  async function refresh() {
    const failures = [];
    const settle = async (work) => {
      try {
        await work();
      } catch (error) {
        if (error instanceof AuthNeeded) throw error;
        failures.push(error.message || String(error));
      }
    };
    try {
      await Promise.all([
        settle(async () => renderTotals(await getJSON("/mirror/v1/stats"))),
        settle(async () => {
          const answer = await getJSON(`/mirror/v1/stats/layers?limit=${MAX_LAYERS}`);
          renderLayers(answer.layers || []);
          renderReclaimable(answer.reclaimable || [], answer.reclaimableBlobs ?? 0);
        }),
        settle(async () => renderSync(await getJSON("/mirror/v1/sync"))),
        settle(async () => renderRegistries((await getJSON("/dashboard/registries")).registries || [])),
        settle(async () => {
          await loadDeletions();
          followDeletions();  // runs until the stream drops; a no-op while it is open
        }),
      ]);
    } catch (error) {
      if (error instanceof AuthNeeded) {
        sessionStorage.removeItem(TOKEN_KEY);  // missing or refused: ask again
        askForToken();
        showError("");
        return false;
      }
      throw error;
    }
    showError(failures.length ? `Some figures could not be refreshed: ${failures.join("; ")}` : "");
    const updated = byTestId("updated-at");
    const now = new Date();
    updated.textContent = now.toLocaleTimeString("en-GB");
    updated.dateTime = now.toISOString();
    document.body.dataset.loaded = "true";
    return true;
  }

  let timer = null;
  let busy = false;

  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(tick, REFRESH_MS);
  }

  async function tick() {
    if (busy) return;  // a refresh is under way; it schedules the next one
    if (document.hidden) {
      schedule();
      return;
    }
    busy = true;
    clearTimeout(timer);
    const keepGoing = await refresh().catch((error) => {
      showError(String(error));
      return true;
    }).finally(() => {
      busy = false;
    });
    if (keepGoing) schedule();
  }

  function start() {
    const form = byTestId("auth-form");
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const token = form.querySelector("input").value.trim();
      if (!token) return;
      sessionStorage.setItem(TOKEN_KEY, token);
      form.hidden = true;
      tick();
    });
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden) tick();
    });
    tick();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
