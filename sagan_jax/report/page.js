// The run report's page script (sagan_jax/report/__init__.py inlines it in page.html): fills the
// page's text, tables and figures, and draws the attention explorer, the sample slider and the
// plots, all from the JSON in <script id="report-data">. No network: everything it needs is in
// the page. window.explorer exposes the explorer's state (the tests read it; so can a curious
// user in the console).
"use strict";
(function () {
  const DATA = JSON.parse(document.getElementById("report-data").textContent);
  const $ = (id) => document.getElementById(id);
  const el = (tag, attrs, ...children) => {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v; else if (k === "text") node.textContent = v;
      else node.setAttribute(k, v);
    }
    for (const c of children) node.append(c);
    return node;
  };
  const SVG = "http://www.w3.org/2000/svg";
  const svg = (tag, attrs) => {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    return node;
  };
  const bytes = (b64) => {
    const bin = atob(b64), out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  };
  const inflate = async (data) => {
    const stream = new Blob([data]).stream().pipeThrough(new DecompressionStream("deflate"));
    return new Uint8Array(await new Response(stream).arrayBuffer());
  };
  const fmt = (v) => (v === 0 ? "0" : Math.abs(v) >= 1e4 || Math.abs(v) < 1e-3 ? v.toExponential(2)
                      : v.toPrecision(3).replace(/\.?0+$/, ""));
  const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
                   "#7f7f7f", "#bcbd22", "#17becf"];

  // ---------------------------------------------------------------- the run's text, tables, figures
  const show = (node) => { node.hidden = false; };
  const row = (cells, tag = "td") => el("tr", {}, ...cells.map((c) => el(tag, { text: c })));

  function setUpSections() {
    if (DATA.no_logs) {
      $("no-logs").textContent = DATA.no_logs;
      show($("no-logs"));
    }
    if (DATA.last) {
      $("last-step").textContent = DATA.last.step;
      $("last-values").textContent = DATA.last.values.map(([tag, v]) => `${tag} = ${v}`).join(", ");
      show($("last-logged"));
    }
    const E = DATA.explorer;
    if (E) $("explorer-step").textContent = ` (checkpoint of step ${E.step})`;
    if (E && E.layers.length) {
      $("explorer-mib").textContent = (E.raw_bytes / 2 ** 20).toFixed(1);
      const strided = E.layers.filter((l) => l.stride > 1);
      if (strided.length) {
        $("explorer-strides").textContent = strided.map((l) => `${l.id} (s = ${l.stride})`).join(", ");
        show($("explorer-strided"));
      }
      show($("explorer-note"));
    }
    if (DATA.gammas.length) {
      $("gamma-table").append(...DATA.gammas.map((r) => row(r)));
      show($("gamma-table"));
    } else {
      show($("gamma-absent"));
    }
    $("samples-count").textContent = DATA.samples.length ? `; ${DATA.samples.length} of them`
                                                         : ": none written yet";
    if (DATA.evaluations) {
      $("evaluations-table").append(row(DATA.evaluations.columns, "th"),
                                    ...DATA.evaluations.rows.map((r) => row(r)));
      if (DATA.protocol) {
        $("protocol-text").textContent = DATA.protocol;
        show($("protocol"));
      }
      show($("evaluations"));
    }
    if (DATA.figures.length) {
      $("figures-count").textContent = DATA.figures.length;
      $("figures-list").append(...DATA.figures.flatMap((f) =>
        [el("h3", { text: f.name }), el("img", { alt: f.name, src: f.src })]));
      show($("figures"));
    }
    $("config-text").textContent = DATA.config;
  }

  // ---------------------------------------------------------------- the attention explorer
  const explorer = { ready: false, error: null, state: null };
  window.explorer = explorer;

  async function setUpExplorer() {
    const E = DATA.explorer, box = $("explorer");
    if (!E || !E.layers || !E.layers.length) {
      const reasons = E ? Object.values(E.networks || {}).map((n) => n.absent).filter(Boolean)
                        : [DATA.explorer_absent || "No attention maps in this report."];
      box.append(el("p", { class: "absent", id: "explorer-absent", text: reasons.join(" ") }));
      explorer.ready = true;
      explorer.absent = reasons.join(" ");
      return;
    }
    if (typeof DecompressionStream === "undefined") {
      box.append(el("p", { class: "absent", text: "This browser lacks DecompressionStream; open " +
                           "the page in a current Chromium, Firefox or Safari to explore the maps." }));
      return;
    }
    const missing = Object.values(E.networks || {}).map((n) => n.absent).filter(Boolean);
    if (missing.length) box.append(el("p", { class: "absent", id: "explorer-partial", text: missing.join(" ") }));
    const R = E.resolution, C = E.channels;
    const nets = {};
    for (const [name, n] of Object.entries(E.networks)) {
      if (n.absent) continue;
      const raw = bytes(n.images), size = R * R * C, images = [];
      for (let i = 0; i < n.count; i++) {
        const rgba = new ImageData(R, R), px = raw.subarray(i * size, (i + 1) * size);
        for (let p = 0; p < R * R; p++) {
          const v = C === 1 ? [px[p], px[p], px[p]] : [px[3 * p], px[3 * p + 1], px[3 * p + 2]];
          rgba.data.set([v[0], v[1], v[2], 255], 4 * p);
        }
        images.push(rgba);
      }
      nets[name] = { ...n, images };
    }
    const layers = await Promise.all(E.layers.map(async (l) => {
      const q = await inflate(bytes(l.maps));
      const rowMax = new Float32Array(bytes(l.row_max).buffer);
      let layerMax = 0;
      for (const m of rowMax) layerMax = Math.max(layerMax, m);
      return { ...l, q, rowMax, layerMax, keys: l.key_side * l.key_side,
               stored: l.stored_side * l.stored_side };
    }));
    const luts = Object.fromEntries(Object.entries(DATA.luts).map(([k, v]) => [k, bytes(v)]));

    // DOM: controls, the focus view (image, overlay, marks), the readout, the thumbnails.
    const DISPLAY = R * Math.max(1, Math.round(384 / R));
    const layerSelect = el("select", { id: "layer" });
    for (const l of layers) {
      const keys = l.key_side === l.query_side ? `${l.key_side}×${l.key_side} keys`
                                               : `${l.key_side}×${l.key_side} pooled keys`;
      const stored = l.stride > 1 ? `, every ${l.stride}th query cell stored` : "";
      layerSelect.append(el("option", { value: l.id, text:
        `${l.net} · ${l.name} · feat${l.query_side} (${l.query_side}×${l.query_side} queries → ${keys}${stored})` }));
    }
    const scaleSelect = el("select", { id: "scale" },
      el("option", { value: "map", text: "per map (its largest β is brightest)" }),
      el("option", { value: "shared", text: "shared by the layer (largest β shown)" }));
    const cmapSelect = el("select", { id: "cmap" },
      ...Object.keys(luts).map((k) => el("option", { value: k, text: k })));
    const opacity = el("input", { id: "opacity", type: "range", min: "0", max: "1", step: "0.05", value: "0.6" });
    const smooth = el("input", { id: "smooth", type: "checkbox" });
    const controls = el("div", { class: "controls" },
      el("label", {}, "Layer ", layerSelect), el("label", {}, "Colour scale ", scaleSelect),
      el("label", {}, "Map ", cmapSelect), el("label", {}, "Opacity ", opacity),
      el("label", {}, smooth, " smooth"));
    const canvas = (id, w, h, cls) => el("canvas", { id, width: String(w), height: String(h), class: cls });
    const imageCanvas = canvas("focus-image", R, R, "layer0");
    const overlay = canvas("focus-overlay", 1, 1, "layer1");
    const marks = canvas("focus-marks", DISPLAY, DISPLAY, "layer2");
    const focus = el("div", { class: "focus", style: `width:${DISPLAY}px;height:${DISPLAY}px` },
                     imageCanvas, overlay, marks);
    const colorbar = canvas("colorbar", 256, 1, "colorbar");
    const barLabels = el("div", { class: "barlabels" });
    const readout = el("div", { id: "readout", class: "readout" });
    const caption = el("p", { class: "caption", id: "thumb-caption" });
    const thumbs = el("div", { id: "thumbs", class: "thumbs" });
    box.append(controls, el("div", { class: "explorer-body" },
      el("div", { class: "focus-col" }, focus,
         el("div", { class: "bar", style: `width:${DISPLAY}px` }, colorbar, barLabels), readout),
      el("div", { class: "thumb-col" }, caption, thumbs)));
    for (const c of [imageCanvas, overlay, marks]) { c.style.width = c.style.height = DISPLAY + "px"; }

    const s = { layer: layers[0].id, image: 0, px: R >> 1, py: R >> 1, pinned: false, scale: "map", cmap: Object.keys(luts)[0],
                opacity: 0.6, smooth: false };
    // G's last layer first (the paper's figures), when G has one.
    const gLayers = layers.filter((l) => l.net === "G");
    if (gLayers.length) s.layer = gLayers[gLayers.length - 1].id;
    layerSelect.value = s.layer;
    let shownNet = null;

    const layerOf = () => layers.find((l) => l.id === s.layer);

    function buildThumbs(net) {
      const n = nets[net];
      thumbs.replaceChildren();
      caption.textContent = n.caption;
      const cols = n.columns, rows = Math.ceil(n.count / cols);
      const size = Math.round(Math.max(40, Math.min(96, 2 * R, (DISPLAY + 120) / rows - 3)));
      for (let i = 0; i < n.count; i++) {
        if (i % cols === 0 && net === "G") thumbs.append(el("div", { class: "rowlabel", text: `class ${n.labels[i]}` }));
        const c = canvas(`thumb-${net}-${i}`, R, R, "thumb");
        c.style.width = c.style.height = size + "px";
        c.title = `${net === "G" ? "sample" : "real image"} ${i}, class ${n.labels[i]}`;
        c.getContext("2d").putImageData(n.images[i], 0, 0);
        const at = (ev) => [Math.floor(ev.offsetX * R / c.clientWidth), Math.floor(ev.offsetY * R / c.clientHeight)];
        c.addEventListener("mousemove", (ev) => { if (!s.pinned) { s.image = i; [s.px, s.py] = at(ev); render(); } });
        c.addEventListener("click", (ev) => { s.image = i; [s.px, s.py] = at(ev); s.pinned = true; render(); });
        thumbs.append(c);
        if (net === "G" && i % cols === cols - 1) thumbs.append(el("br"));
      }
      shownNet = net;
    }

    function render() {
      const l = layerOf(), net = nets[l.net];
      if (shownNet !== l.net) buildThumbs(l.net);
      s.image = Math.min(s.image, net.count - 1);
      s.px = Math.max(0, Math.min(R - 1, s.px)); s.py = Math.max(0, Math.min(R - 1, s.py));
      imageCanvas.getContext("2d").putImageData(net.images[s.image], 0, 0);
      // The query cell under the pointer, snapped to the nearest stored one.
      const qr = Math.floor(s.py * l.query_side / R), qc = Math.floor(s.px * l.query_side / R);
      const a = Math.min(l.stored_side - 1, Math.floor(qr / l.stride));
      const b = Math.min(l.stored_side - 1, Math.floor(qc / l.stride));
      const half = l.stride >> 1, row = a * l.stride + half, col = b * l.stride + half;
      const offset = (s.image * l.stored + a * l.stored_side + b) * l.keys;
      const q = l.q.subarray(offset, offset + l.keys);
      const rowMax = l.rowMax[s.image * l.stored + a * l.stored_side + b];
      const values = Array.from(q, (v) => v / 255 * rowMax);
      let best = 0;
      for (let i = 1; i < l.keys; i++) if (q[i] > q[best]) best = i;
      const top = values[best], scaleMax = s.scale === "map" ? rowMax : l.layerMax;
      // Overlay: one canvas pixel per key cell, stretched over the image by CSS.
      overlay.width = overlay.height = l.key_side;
      const ctx = overlay.getContext("2d"), img = ctx.createImageData(l.key_side, l.key_side);
      const lut = luts[s.cmap], index = new Array(l.keys);
      for (let i = 0; i < l.keys; i++) {
        const t = s.scale === "map" ? q[i] : Math.round(255 * Math.min(1, values[i] / scaleMax));
        index[i] = t;
        img.data.set([lut[3 * t], lut[3 * t + 1], lut[3 * t + 2], 255], 4 * i);
      }
      ctx.putImageData(img, 0, 0);
      overlay.style.opacity = s.opacity;
      overlay.style.imageRendering = s.smooth ? "auto" : "pixelated";
      // Marks: the query cell (dot; its stored block when the grid is coarsened), the top key.
      const m = marks.getContext("2d");
      m.clearRect(0, 0, DISPLAY, DISPLAY);
      const qs = DISPLAY / l.query_side, ks = DISPLAY / l.key_side;
      const kr = Math.floor(best / l.key_side), kc = best % l.key_side;
      m.lineWidth = 3; m.strokeStyle = "#00e5ff";
      m.strokeRect(kc * ks + 1.5, kr * ks + 1.5, ks - 3, ks - 3);
      if (l.stride > 1) {
        m.setLineDash([4, 3]); m.strokeStyle = "rgba(255,255,255,0.8)"; m.lineWidth = 1;
        m.strokeRect(b * l.stride * qs + 0.5, a * l.stride * qs + 0.5, l.stride * qs - 1, l.stride * qs - 1);
        m.setLineDash([]);
      }
      const cx = (col + 0.5) * qs, cy = (row + 0.5) * qs, r = Math.max(4, Math.min(9, qs / 2));
      m.beginPath(); m.arc(cx, cy, r, 0, 2 * Math.PI);
      m.fillStyle = "#ff2d55"; m.fill(); m.lineWidth = 2; m.strokeStyle = "#fff"; m.stroke();
      // Colour bar and readout.
      const bar = colorbar.getContext("2d"), barImg = bar.createImageData(256, 1);
      for (let t = 0; t < 256; t++) barImg.data.set([lut[3 * t], lut[3 * t + 1], lut[3 * t + 2], 255], 4 * t);
      bar.putImageData(barImg, 0, 0);
      const uniform = 1 / l.keys;
      barLabels.replaceChildren(el("span", { text: "0" }),
        el("span", { text: `uniform 1/${l.keys} = ${fmt(uniform)}` + (uniform <= scaleMax ? ` at ${Math.round(100 * uniform / scaleMax)}%` : "") }),
        el("span", { text: `${fmt(scaleMax)} (${s.scale === "map" ? "this map's max" : "layer's max"})` }));
      const total = values.reduce((x, y) => x + y, 0);
      let entropy = 0;  // of the stored map renormalised (quantisation moves its sum off 1 a little)
      for (const v of values) if (v > 0) entropy -= (v / total) * Math.log(v / total);
      const label = net.labels[s.image];
      readout.replaceChildren(
        el("div", { text: `${l.net === "G" ? "G sample" : "real image"} ${s.image} (class ${label}) · ` +
                          `${l.name}, feat${l.query_side}, γ = ${l.gamma === null ? "?" : fmt(l.gamma)}` }),
        el("div", { text: `query cell (row ${row}, col ${col}) of ${l.query_side}×${l.query_side}` +
                          (s.pinned ? " · pinned (click another pixel to move it, the same one to release)"
                                    : " · click to pin") }),
        el("div", { text: `most attended key (row ${kr}, col ${kc}) of ${l.key_side}×${l.key_side}` +
                          `${l.key_side !== l.query_side ? " pooled" : ""}: β = ${fmt(top)}` }),
        el("div", { text: `spread: exp(entropy) = ${Math.exp(entropy).toFixed(1)} of ${l.keys} keys` }));
      for (const t of thumbs.querySelectorAll("canvas")) t.classList.remove("selected");
      const sel = $(`thumb-${l.net}-${s.image}`);
      if (sel) sel.classList.add("selected");
      explorer.state = { layer: l.id, net: l.net, image: s.image, pixel: [s.py, s.px],
                         query: [row, col], stored_query: [a, b], query_side: l.query_side,
                         key_side: l.key_side, values, lut_index: index, row_max: rowMax,
                         scale_max: scaleMax, max_key: [kr, kc], pinned: s.pinned, scale: s.scale,
                         cmap: s.cmap, opacity: s.opacity };
    }

    const at = (ev) => [Math.floor(ev.offsetX * R / marks.clientWidth), Math.floor(ev.offsetY * R / marks.clientHeight)];
    marks.addEventListener("mousemove", (ev) => { if (!s.pinned) { [s.px, s.py] = at(ev); render(); } });
    marks.addEventListener("click", (ev) => {
      const [px, py] = at(ev);
      s.pinned = !(s.pinned && px === s.px && py === s.py);
      [s.px, s.py] = [px, py];
      render();
    });
    layerSelect.addEventListener("change", () => { s.layer = layerSelect.value; render(); });
    scaleSelect.addEventListener("change", () => { s.scale = scaleSelect.value; render(); });
    cmapSelect.addEventListener("change", () => { s.cmap = cmapSelect.value; render(); });
    opacity.addEventListener("input", () => { s.opacity = Number(opacity.value); render(); });
    smooth.addEventListener("change", () => { s.smooth = smooth.checked; render(); });
    explorer.select = (opts) => { Object.assign(s, opts); if (opts.layer) layerSelect.value = opts.layer; render(); };
    explorer.layers = layers.map((l) => l.id);
    render();
    explorer.ready = true;
  }

  // ---------------------------------------------------------------- plots (SVG)
  function niceTicks(lo, hi, n, integer) {
    if (!(hi > lo)) { const d = Math.abs(lo) * 0.1 || 1; lo -= d; hi += d; }
    const step0 = (hi - lo) / n, mag = Math.pow(10, Math.floor(Math.log10(step0)));
    let step = [1, 2, 5, 10].map((k) => k * mag).find((k) => k >= step0);
    if (integer) step = Math.max(1, Math.round(step));
    const ticks = [];
    for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) ticks.push(+t.toPrecision(12));
    const big = Math.max(...ticks.map(Math.abs));
    const label = step < 1e-3 || big >= 1e6 ? (t) => (t === 0 ? "0" : t.toExponential(1))
                : (t) => t.toFixed(Math.max(0, -Math.floor(Math.log10(step) + 1e-9)));
    return { lo: Math.min(lo, ticks[0]), hi: Math.max(hi, ticks[ticks.length - 1]), ticks, label };
  }

  function linePlot(container, title, series, opts = {}) {
    const W = 560, H = 270, L = 62, Rm = 14, T = 30, B = 38;
    const all = series.flatMap((s) => s.points);
    if (!all.length) return;
    const xs = niceTicks(Math.min(...all.map((p) => p[0])), Math.max(...all.map((p) => p[0])), 6, true);
    const ys = niceTicks(Math.min(...all.map((p) => p[1])), Math.max(...all.map((p) => p[1])), 5);
    const X = (x) => L + (x - xs.lo) / (xs.hi - xs.lo) * (W - L - Rm);
    const Y = (y) => H - B - (y - ys.lo) / (ys.hi - ys.lo) * (H - T - B);
    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "plot", role: "img" });
    root.append(Object.assign(svg("text", { x: L, y: 16, class: "ptitle" }), { textContent: title }));
    for (const t of ys.ticks) {
      root.append(svg("line", { x1: L, x2: W - Rm, y1: Y(t), y2: Y(t), class: "grid" }));
      root.append(Object.assign(svg("text", { x: L - 6, y: Y(t) + 4, class: "tick", "text-anchor": "end" }), { textContent: ys.label(t) }));
    }
    for (const t of xs.ticks) {
      root.append(svg("line", { x1: X(t), x2: X(t), y1: T, y2: H - B, class: "grid" }));
      root.append(Object.assign(svg("text", { x: X(t), y: H - B + 15, class: "tick", "text-anchor": "middle" }), { textContent: xs.label(t) }));
    }
    root.append(Object.assign(svg("text", { x: (L + W - Rm) / 2, y: H - 6, class: "axis", "text-anchor": "middle" }),
                              { textContent: opts.xlabel || "step" }));
    series.forEach((s, i) => {
      const color = PALETTE[i % PALETTE.length];
      root.append(svg("polyline", { points: s.points.map((p) => `${X(p[0])},${Y(p[1])}`).join(" "),
                                    fill: "none", stroke: color, "stroke-width": 1.6 }));
      if (opts.markers || s.points.length < 3)
        for (const p of s.points) root.append(svg("circle", { cx: X(p[0]), cy: Y(p[1]), r: 3, fill: color }));
    });
    const legend = el("div", { class: "legend" }, ...series.map((s, i) =>
      el("span", {}, el("i", { style: `background:${PALETTE[i % PALETTE.length]}` }), s.label)));
    const hover = svg("line", { y1: T, y2: H - B, class: "hover", visibility: "hidden" });
    const tip = el("div", { class: "tip" });
    root.append(hover);
    root.addEventListener("mousemove", (ev) => {
      const box = root.getBoundingClientRect(), x = (ev.clientX - box.left) * W / box.width;
      const step = xs.lo + (x - L) / (W - L - Rm) * (xs.hi - xs.lo);
      const near = series.map((s) => s.points.reduce((a, p) => (Math.abs(p[0] - step) < Math.abs(a[0] - step) ? p : a)));
      hover.setAttribute("x1", X(near[0][0])); hover.setAttribute("x2", X(near[0][0]));
      hover.setAttribute("visibility", "visible");
      tip.replaceChildren(...near.map((p, i) => el("div", { text: `${series[i].label}: ${fmt(p[1])} (step ${p[0]})` })));
      tip.style.display = "block";
    });
    root.addEventListener("mouseleave", () => { hover.setAttribute("visibility", "hidden"); tip.style.display = "none"; });
    container.append(el("figure", { class: "plotbox" }, root, legend, tip));
  }

  function setUpPlots() {
    for (const group of DATA.plots) {
      const box = $(group.target);
      if (box) linePlot(box, group.title, group.series, group.opts || {});
    }
  }

  // ---------------------------------------------------------------- samples over steps
  function setUpSamples() {
    const box = $("samples"), frames = DATA.samples;
    if (!box || !frames.length) return;
    const img = el("img", { id: "sample-frame", alt: "sample grid" });
    const slider = el("input", { id: "sample-step", type: "range", min: "0", max: String(frames.length - 1),
                                 value: String(frames.length - 1) });
    const label = el("span", { id: "sample-label" });
    const show = () => {
      const f = frames[Number(slider.value)];
      img.src = f.src; label.textContent = `step ${f.step} (${Number(slider.value) + 1} of ${frames.length})`;
    };
    img.addEventListener("load", () => {
      const k = Math.max(1, Math.min(3, Math.floor(640 / img.naturalWidth)));
      img.style.width = img.naturalWidth * k + "px";
    });
    slider.addEventListener("input", show);
    box.append(el("div", { class: "controls" }, el("label", {}, "Step ", slider), label), img);
    show();
  }

  setUpSections();
  setUpPlots();
  setUpSamples();
  setUpExplorer().catch((e) => { explorer.error = String(e); $("explorer").append(el("p", { class: "absent", text: "explorer: " + e })); });
})();
