/* mechscope views: renders the data that mechscope.views embeds in each view (no framework, no network).
 * Each view is a div.msv-root (with a unique id) holding its data in a JSON script element; a tiny inline
 * script next to it calls mechscopeViews.render(root). The library defines itself once per page. */
(function () {
  "use strict";
  var VERSION = 2;
  if (window.mechscopeViews && window.mechscopeViews.version >= VERSION) return;

  // ---------------------------------------------------------------- colour
  var RAMPS = {
    blues: [[247, 251, 255], [198, 219, 239], [107, 174, 214], [33, 113, 181], [8, 48, 107]],
    oranges: [[255, 245, 235], [253, 208, 162], [253, 141, 60], [217, 72, 1], [127, 39, 4]],
    // negative blue, white at the centre, positive red (ColorBrewer RdBu, reversed)
    diverging: [[5, 48, 97], [67, 147, 195], [247, 247, 247], [214, 96, 77], [103, 0, 31]]
  };

  function clamp01(t) { return t < 0 ? 0 : (t > 1 ? 1 : t); }

  function ramp(name, t) {
    var stops = RAMPS[name], x = clamp01(t) * (stops.length - 1);
    var i = Math.min(Math.floor(x), stops.length - 2), f = x - i, a = stops[i], b = stops[i + 1];
    return [a[0] + (b[0] - a[0]) * f, a[1] + (b[1] - a[1]) * f, a[2] + (b[2] - a[2]) * f];
  }

  function css(c) { return "rgb(" + Math.round(c[0]) + "," + Math.round(c[1]) + "," + Math.round(c[2]) + ")"; }

  function ink(c) { return (0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]) / 255 < 0.55 ? "#fff" : "#1a1a1a"; }

  // scale: {kind: "sequential"|"diverging", lo, hi, center} as computed by mechscope.views.data.color_scale
  function position(scale, v) {
    if (scale.kind === "diverging") {
      var half = Math.max(scale.hi - scale.center, scale.center - scale.lo) || 1;
      return 0.5 + 0.5 * (v - scale.center) / half;
    }
    return (v - scale.lo) / ((scale.hi - scale.lo) || 1);
  }

  function colour(scale, v, name) {
    if (v === null || v === undefined || isNaN(v)) return null;
    return ramp(name || (scale.kind === "diverging" ? "diverging" : "blues"), position(scale, v));
  }

  function paint(node, c) {
    if (c === null) { node.style.background = ""; node.style.color = ""; node.classList.add("msv-blank"); return; }
    node.classList.remove("msv-blank");
    node.style.background = css(c);
    node.style.color = ink(c);
  }

  function fmt(v, decimals) {
    if (v === null || v === undefined || isNaN(v)) return "\u2014";
    if (decimals !== undefined) return v.toFixed(decimals);
    if (v === 0) return "0";
    var a = Math.abs(v);
    return (a >= 1e-4 && a < 1e6) ? String(parseFloat(v.toPrecision(4))) : v.toExponential(3);
  }

  // a value printed inside a small cell: about 3 characters of precision
  function short(v) {
    var a = Math.abs(v);
    if (v === 0) return "0";
    if (a >= 1000 || a < 0.01) return v.toExponential(0);
    return a >= 10 ? v.toFixed(1) : v.toFixed(2);
  }

  // ---------------------------------------------------------------- DOM helpers
  function el(tag, cls, text) {
    var n = document.createElement(tag);
    if (cls) n.className = cls;
    if (text !== undefined && text !== null) n.textContent = text;
    return n;
  }

  function legend(scale, name, lowText, highText) {
    var box = el("span", "msv-legend");
    var bar = el("span", "msv-legend-bar"), stops = [];
    for (var i = 0; i <= 10; i++) stops.push(css(ramp(name || (scale.kind === "diverging" ? "diverging" : "blues"), i / 10)));
    bar.style.background = "linear-gradient(to right," + stops.join(",") + ")";
    box.appendChild(el("span", "msv-legend-num", lowText !== undefined ? lowText : fmt(scale.lo)));
    box.appendChild(bar);
    box.appendChild(el("span", "msv-legend-num", highText !== undefined ? highText : fmt(scale.hi)));
    return box;
  }

  // One tooltip per view; `rows` are strings or [key, value] pairs, or a prepared node.
  function Tip(root) {
    var node = el("div", "msv-tip");
    node.setAttribute("role", "tooltip");
    root.appendChild(node);
    this.show = function (evt, rows) {
      node.textContent = "";
      if (rows instanceof Node) node.appendChild(rows);
      else rows.forEach(function (r, i) {
        var line = el("div", i === 0 ? "msv-tip-head" : "msv-tip-row");
        if (typeof r === "string") line.textContent = r;
        else { line.appendChild(el("span", "msv-tip-key", r[0])); line.appendChild(el("span", "msv-tip-val", r[1])); }
        node.appendChild(line);
      });
      node.style.display = "block";
      var box = root.getBoundingClientRect(), w = node.offsetWidth, h = node.offsetHeight;
      var x = evt.clientX - box.left + 14, y = evt.clientY - box.top + 14;
      if (x + w > root.clientWidth) x = Math.max(0, evt.clientX - box.left - w - 14);
      if (evt.clientY + 14 + h > window.innerHeight) y = Math.max(0, evt.clientY - box.top - h - 14);
      node.style.left = x + "px";
      node.style.top = y + "px";
    };
    this.hide = function () { node.style.display = "none"; };
  }

  function tokenSpan(text, pos) {
    var s = el("span", "msv-tok", text);
    s.setAttribute("data-pos", String(pos));
    return s;
  }

  // positions after which the text wraps (their token holds a newline)
  function lineBreaks(d) {
    var out = {};
    d.breaks.forEach(function (i) { out[i] = true; });
    return out;
  }

  function quoted(t) { return "\u201c" + t + "\u201d"; }

  // ---------------------------------------------------------------- attention patterns
  function decodePattern(d) {
    var bin = atob(d.packed), n = bin.length / 2, out = new Float32Array(n), step = (d.hi - d.lo) / 65534;
    for (var i = 0; i < n; i++) {
      var q = bin.charCodeAt(2 * i) | (bin.charCodeAt(2 * i + 1) << 8);
      out[i] = q === 65535 ? NaN : d.lo + q * step;
    }
    return out;
  }

  function attention(body, d, tip) {
    var n = d.tokens.length, values = decodePattern(d);
    var perHead = d.causal ? n * (n + 1) / 2 : n * n;
    var state = { layer: d.layer || 0, pinned: d.head || 0, shown: d.head || 0, focus: null, mark: null };

    function get(layer, head, q, k) {
      if (d.causal && k > q) return NaN;
      var base = (layer * d.n_heads + head) * perHead;
      return values[base + (d.causal ? q * (q + 1) / 2 + k : q * n + k)];
    }
    function headName(h) {
      return d.layer_labels ? "L" + d.layer_labels[state.layer] + " " + d.head_labels[h] : d.head_labels[h];
    }

    // controls
    var controls = el("div", "msv-controls");
    if (d.layer_labels) {
      var label = el("label", "msv-control", "Layer ");
      var select = el("select", "msv-layer");
      d.layer_labels.forEach(function (name, i) {
        var o = el("option", null, name); o.value = String(i); o.selected = i === state.layer; select.appendChild(o);
      });
      select.addEventListener("change", function () { state.layer = +select.value; markHeads(); drawThumbs(); drawBig(); paintTokens(); });
      label.appendChild(select);
      controls.appendChild(label);
    }
    controls.appendChild(el("span", "msv-hint", "Hover a head to preview it, click to pin it; hover a token or a cell."));
    body.appendChild(controls);

    // head thumbnails
    var grid = el("div", "msv-heads"), thumbs = [];
    var T = 72, dpr = window.devicePixelRatio || 1;
    for (var h = 0; h < d.n_heads; h++) {
      var cell = el("div", "msv-head");
      cell.setAttribute("data-head", String(h));
      var c = el("canvas", "msv-thumb");
      c.width = T * dpr; c.height = T * dpr; c.style.width = T + "px"; c.style.height = T + "px";
      cell.appendChild(c);
      cell.appendChild(el("div", "msv-head-label", d.head_labels[h]));
      (function (h) {
        cell.addEventListener("mouseenter", function () { state.shown = h; markHeads(); drawBig(); paintTokens(); });
        cell.addEventListener("mouseleave", function () { state.shown = state.pinned; markHeads(); drawBig(); paintTokens(); });
        cell.addEventListener("click", function () { state.pinned = state.shown = h; markHeads(); drawBig(); paintTokens(); });
      })(h);
      grid.appendChild(cell);
      thumbs.push(cell);
    }
    body.appendChild(grid);

    function markHeads() {
      thumbs.forEach(function (t, h) {
        t.classList.toggle("msv-pinned", h === state.pinned);
        t.classList.toggle("msv-shown", h === state.shown);
      });
      title.textContent = headName(state.shown) + (state.shown === state.pinned ? "" : "  (preview)");
    }

    // pixel image of one head: n x n, one pixel per (q, k); built once per (layer, head)
    var images = {};
    function image(head) {
      var key = state.layer + ":" + head;
      if (!images[key]) images[key] = paintHead(head);
      return images[key];
    }
    function paintHead(head) {
      var off = document.createElement("canvas");
      off.width = n; off.height = n;
      var g = off.getContext("2d"), img = g.createImageData(n, n);
      for (var q = 0; q < n; q++) for (var k = 0; k < n; k++) {
        var v = get(state.layer, head, q, k), o = 4 * (q * n + k);
        if (isNaN(v)) { img.data[o] = img.data[o + 1] = img.data[o + 2] = 255; img.data[o + 3] = 0; continue; }
        var col = ramp("blues", position(d.scale, v));
        img.data[o] = col[0]; img.data[o + 1] = col[1]; img.data[o + 2] = col[2]; img.data[o + 3] = 255;
      }
      g.putImageData(img, 0, 0);
      return off;
    }

    function drawThumbs() {
      thumbs.forEach(function (t, h) {
        var c = t.firstChild, g = c.getContext("2d");
        g.setTransform(1, 0, 0, 1, 0, 0);
        g.clearRect(0, 0, c.width, c.height);
        g.fillStyle = "#f4f4f4"; g.fillRect(0, 0, c.width, c.height);
        g.imageSmoothingEnabled = false;
        g.drawImage(image(h), 0, 0, c.width, c.height);
      });
    }

    // enlarged head with token labels
    var main = el("div", "msv-main");
    var side = el("div", "msv-side");
    var title = el("div", "msv-head-title");
    side.appendChild(title);
    side.appendChild(legend(d.scale, "blues"));
    var key = el("div", "msv-key");
    var k1 = el("span", "msv-swatch msv-swatch-row"), k2 = el("span", "msv-swatch msv-swatch-col");
    key.appendChild(k1); key.appendChild(el("span", null, " the hovered token attends to  "));
    key.appendChild(el("br"));
    key.appendChild(k2); key.appendChild(el("span", null, " attends to the hovered token"));
    side.appendChild(key);
    var big = el("canvas", "msv-pattern");
    main.appendChild(big);
    main.appendChild(side);
    body.appendChild(main);

    var cs = Math.max(3, Math.min(24, Math.floor(640 / n))), labels = cs >= 9;
    var font = Math.min(12, cs - 1) + "px system-ui, -apple-system, 'Segoe UI', sans-serif";
    var probe = document.createElement("canvas").getContext("2d"), left = 0;
    probe.font = font;
    function clip(t) { return t.length > 14 ? t.slice(0, 13) + "\u2026" : t; }
    if (labels) d.tokens.forEach(function (t) { left = Math.max(left, probe.measureText(clip(t)).width); });
    left = labels ? Math.ceil(left) + 8 : 0;
    var top = left, W = left + n * cs + 2, H = top + n * cs + 2;
    big.width = W * dpr; big.height = H * dpr; big.style.width = W + "px"; big.style.height = H + "px";

    function drawBig() {
      var g = big.getContext("2d");
      g.setTransform(dpr, 0, 0, dpr, 0, 0);
      g.clearRect(0, 0, W, H);
      g.fillStyle = "#f4f4f4"; g.fillRect(left, top, n * cs, n * cs);
      g.imageSmoothingEnabled = false;
      g.drawImage(image(state.shown), left, top, n * cs, n * cs);
      if (labels) {
        g.font = font; g.fillStyle = "#333"; g.textBaseline = "middle";
        for (var i = 0; i < n; i++) {
          var t = clip(d.tokens[i]), hot = state.focus === i || state.mark === i;
          g.font = (hot ? "bold " : "") + font;
          g.textAlign = "right";
          g.fillText(t, left - 4, top + i * cs + cs / 2);
          g.save();
          g.translate(left + i * cs + cs / 2, top - 4);
          g.rotate(-Math.PI / 2);
          g.textAlign = "left";
          g.fillText(t, 0, 0);
          g.restore();
        }
      }
      if (state.focus !== null) {
        g.lineWidth = 1.5;
        g.strokeStyle = "#08306b";
        g.strokeRect(left + 0.5, top + state.focus * cs + 0.5, n * cs - 1, cs - 1);
        g.strokeStyle = "#a63603";
        g.strokeRect(left + state.focus * cs + 0.5, top + 0.5, cs - 1, n * cs - 1);
      }
      if (state.mark !== null && state.focus !== null) {
        g.strokeStyle = "#000"; g.lineWidth = 2;
        g.strokeRect(left + state.mark * cs, top + state.focus * cs, cs, cs);
      }
    }

    big.addEventListener("mousemove", function (evt) {
      var box = big.getBoundingClientRect();
      var k = Math.floor((evt.clientX - box.left - left) / cs), q = Math.floor((evt.clientY - box.top - top) / cs);
      if (q < 0 || k < 0 || q >= n || k >= n) { clearFocus(); return; }
      state.focus = q; state.mark = k;
      drawBig(); paintTokens();
      tip.show(evt, [headName(state.shown),
        ["query", q + " " + quoted(d.tokens[q])], ["key", k + " " + quoted(d.tokens[k])],
        ["attention", fmt(get(state.layer, state.shown, q, k), d.decimals)]]);
    });
    big.addEventListener("mouseleave", clearFocus);

    // tokens: hovering one colours what it attends to (blue) and what attends to it (orange)
    var strip = el("div", "msv-tokens msv-attn-tokens"), spans = [], breaks = lineBreaks(d);
    d.tokens.forEach(function (t, i) {
      var s = tokenSpan(t, i);
      s.addEventListener("mouseenter", function (evt) {
        state.focus = i; state.mark = null; drawBig(); paintTokens();
        tip.show(evt, [i + " " + quoted(t), ["head", headName(state.shown)],
          ["attends to itself", fmt(get(state.layer, state.shown, i, i), d.decimals)]]);
      });
      s.addEventListener("mouseleave", clearFocus);
      strip.appendChild(s);
      if (breaks[i]) strip.appendChild(el("br"));
      spans.push(s);
    });
    body.appendChild(strip);

    function paintTokens() {
      spans.forEach(function (s, j) {
        s.classList.toggle("msv-focus", state.focus === j);
        s.classList.toggle("msv-mark", state.mark === j);
        if (state.focus === null) { s.style.background = ""; s.style.color = ""; s.removeAttribute("data-value"); return; }
        var i = state.focus, row = j <= i || !d.causal;
        var v = row ? get(state.layer, state.shown, i, j) : get(state.layer, state.shown, j, i);
        s.setAttribute("data-value", isNaN(v) ? "" : String(v));
        var c = isNaN(v) ? null : ramp(row ? "blues" : "oranges", position(d.scale, v));
        if (c === null) { s.style.background = ""; s.style.color = ""; } else { s.style.background = css(c); s.style.color = ink(c); }
      });
    }

    function clearFocus() { state.focus = null; state.mark = null; tip.hide(); drawBig(); paintTokens(); }

    markHeads(); drawThumbs(); drawBig();
  }

  // ---------------------------------------------------------------- token colours
  function tokenColors(body, d, tip) {
    var rowsBox = el("div", "msv-trows"), all = [], breaks = lineBreaks(d);
    d.rows.forEach(function (row, r) {
      var line = el("div", "msv-trow");
      if (d.rows.length > 1 || row.label) {
        var head = el("div", "msv-trow-head");
        head.appendChild(el("div", "msv-trow-label", row.label));
        head.appendChild(legend(row.scale));
        line.appendChild(head);
      }
      var strip = el("div", "msv-tokens"), spans = [];
      d.tokens.forEach(function (t, i) {
        var s = tokenSpan(t, i), v = row.values[i];
        paint(s, colour(row.scale, v));
        s.setAttribute("data-value", v === null ? "" : String(v));
        s.addEventListener("mouseenter", function (evt) { focus(i, evt); });
        s.addEventListener("mouseleave", function () { focus(null); });
        strip.appendChild(s);
        if (breaks[i]) strip.appendChild(el("br"));
        spans.push(s);
      });
      all.push(spans);
      line.appendChild(strip);
      rowsBox.appendChild(line);
    });
    if (d.rows.length === 1 && !d.rows[0].label) {
      var bar = el("div", "msv-controls");
      bar.appendChild(legend(d.rows[0].scale));
      body.appendChild(bar);
    }
    body.appendChild(rowsBox);

    function focus(i, evt) {
      all.forEach(function (spans) { spans.forEach(function (s, j) { s.classList.toggle("msv-focus", j === i); }); });
      if (i === null) { tip.hide(); return; }
      var rows = [i + " " + quoted(d.tokens[i])];
      d.rows.forEach(function (row, r) { rows.push([row.label || "value", fmt(row.values[i])]); });
      tip.show(evt, rows);
    }
  }

  // ---------------------------------------------------------------- logit-lens table
  function lensTable(body, d, tip) {
    var bar = el("div", "msv-controls");
    bar.appendChild(el("span", "msv-hint", "top token per layer and position, coloured by its probability"));
    bar.appendChild(legend(d.scale, "blues", "0", "1"));
    body.appendChild(bar);
    var wrap = el("div", "msv-scroll"), table = el("table", "msv-table msv-lens");
    var thead = el("thead"), hr = el("tr"), cols = [];
    hr.appendChild(el("th", "msv-corner", "layer \\ input"));
    d.tokens.forEach(function (t, i) {
      var th = el("th", "msv-colhead");
      th.appendChild(el("div", "msv-pos", String(i)));
      th.appendChild(el("div", "msv-colhead-tok", t));
      hr.appendChild(th); cols.push(th);
    });
    thead.appendChild(hr); table.appendChild(thead);
    var tbody = el("tbody"), rowHeads = [];
    d.top_tokens.forEach(function (row, l) {
      var tr = el("tr"), th = el("th", "msv-rowhead", d.layer_labels[l]);
      tr.appendChild(th); rowHeads.push(th);
      row.forEach(function (tok, p) {
        var td = el("td", "msv-cell", tok), v = d.top_probs[l][p];
        paint(td, colour(d.scale, v, "blues"));
        td.setAttribute("data-value", v === null ? "" : String(v));
        td.addEventListener("mouseenter", function (evt) {
          cols[p].classList.add("msv-hot"); th.classList.add("msv-hot");
          tip.show(evt, lensTip(l, p));
        });
        td.addEventListener("mouseleave", function () {
          cols[p].classList.remove("msv-hot"); th.classList.remove("msv-hot"); tip.hide();
        });
        tr.appendChild(td);
      });
      tbody.appendChild(tr);
    });
    table.appendChild(tbody); wrap.appendChild(table); body.appendChild(wrap);

    function lensTip(l, p) {
      var box = el("div");
      box.appendChild(el("div", "msv-tip-head", "layer " + d.layer_labels[l] + " \u00b7 position " + p + " " + quoted(d.tokens[p])));
      var toks = d.top_k_tokens ? d.top_k_tokens[l][p] : [d.top_tokens[l][p]];
      var probs = d.top_k_probs ? d.top_k_probs[l][p] : [d.top_probs[l][p]];
      var list = el("table", "msv-topk");
      toks.forEach(function (t, k) {
        var tr = el("tr"), v = probs[k];
        tr.appendChild(el("td", "msv-topk-tok", t));
        var barCell = el("td"), b = el("span", "msv-topk-bar");
        b.style.width = Math.round(60 * clamp01(v === null ? 0 : v)) + "px";
        barCell.appendChild(b); tr.appendChild(barCell);
        tr.appendChild(el("td", "msv-topk-val", fmt(v)));
        list.appendChild(tr);
      });
      box.appendChild(list);
      Object.keys(d.scalars).forEach(function (name) {
        var line = el("div", "msv-tip-row");
        line.appendChild(el("span", "msv-tip-key", name));
        line.appendChild(el("span", "msv-tip-val", fmt(d.scalars[name][l][p])));
        box.appendChild(line);
      });
      return box;
    }
  }

  // ---------------------------------------------------------------- heatmaps (one grid, or panels side by side)
  function heatmap(body, d, tip) {
    heatmaps(body, {title: d.title, row_labels: d.row_labels, col_labels: d.col_labels, tokens: d.tokens,
      highlight_rows: d.highlight_rows || [], highlight_cols: d.highlight_cols || [],
      value_name: d.value_name || "value", shared_scale: true,
      panels: [{title: null, values: d.values, scale: d.scale}]}, tip);
  }

  function colName(d, c) { return d.tokens === "cols" ? c + " " + quoted(d.col_labels[c]) : d.col_labels[c]; }
  function rowName(d, r) { return d.tokens === "rows" ? r + " " + quoted(d.row_labels[r]) : d.row_labels[r]; }

  function heatmaps(body, d, tip) {
    var nRows = d.row_labels.length, nCols = d.col_labels.length, many = d.panels.length > 1;
    var showText = nCols <= 16 && nRows <= 64, compact = nRows > 64;
    var vertical = d.tokens !== "cols" && nCols > 8 && d.col_labels.some(function (c) { return c.length > 3; });
    var markRow = {}, markCol = {};
    d.highlight_rows.forEach(function (i) { markRow[i] = true; });
    d.highlight_cols.forEach(function (i) { markCol[i] = true; });
    if (d.shared_scale) {
      var bar = el("div", "msv-controls");
      bar.appendChild(legend(d.panels[0].scale));
      if (d.value_name !== "value") bar.appendChild(el("span", "msv-hint", d.value_name));
      body.appendChild(bar);
    }
    var box = el("div", "msv-panels"), cells = [], heads = [], rowHeads = [];
    d.panels.forEach(function (panel, k) {
      var wrapPanel = el("div", "msv-panel");
      if (panel.title !== null || !d.shared_scale) {
        var ph = el("div", "msv-panel-head");
        if (panel.title !== null) ph.appendChild(el("span", "msv-panel-title", panel.title));
        if (!d.shared_scale) ph.appendChild(legend(panel.scale));
        wrapPanel.appendChild(ph);
      }
      var wrap = el("div", "msv-scroll"), table = el("table", "msv-table msv-heatmap" + (compact ? " msv-compact" : ""));
      var thead = el("thead"), hr = el("tr"), cols = [];
      hr.appendChild(el("th", "msv-corner"));
      d.col_labels.forEach(function (c, j) {
        var th = el("th", "msv-colhead" + (vertical ? " msv-vertical" : "") + (markCol[j] ? " msv-marked" : ""));
        if (d.tokens === "cols") th.appendChild(el("div", "msv-pos", String(j)));
        th.appendChild(el("div", "msv-colhead-tok", c));
        hr.appendChild(th); cols.push(th);
      });
      thead.appendChild(hr); table.appendChild(thead);
      var tbody = el("tbody"), grid = [], ths = [];
      panel.values.forEach(function (row, r) {
        var tr = el("tr"), th = el("th", "msv-rowhead" + (markRow[r] ? " msv-marked" : ""));
        if (d.tokens === "rows") {
          th.appendChild(el("span", "msv-pos", r + " "));
          th.appendChild(el("span", "msv-rowhead-tok", d.row_labels[r]));
        } else th.textContent = d.row_labels[r];
        tr.appendChild(th); ths.push(th);
        var line = [];
        row.forEach(function (v, c) {
          var td = el("td", "msv-cell msv-hcell" + (showText ? " msv-with-text" : "") +
            (markCol[c] || markRow[r] ? " msv-marked-cell" : ""), showText && v !== null ? short(v) : "");
          paint(td, colour(panel.scale, v));
          td.setAttribute("data-value", v === null ? "" : String(v));
          td.msvCell = [r, c];
          tr.appendChild(td); line.push(td);
        });
        tbody.appendChild(tr); grid.push(line);
      });
      // one listener per table, not two per cell: a 5 × 270 × 15 sweep has 20k cells
      tbody.addEventListener("mouseover", function (evt) {
        var at = evt.target.msvCell;
        if (!at) { if (last) focus(k, null, null); return; }  // a row label
        if (!(last && last[0] === at[0] && last[1] === at[1] && last[2] === k)) focus(k, at[0], at[1], evt);
      });
      tbody.addEventListener("mouseleave", function () { focus(k, null, null); });
      table.appendChild(tbody); wrap.appendChild(table); wrapPanel.appendChild(wrap); box.appendChild(wrapPanel);
      cells.push(grid); heads.push(cols); rowHeads.push(ths);
    });
    body.appendChild(box);

    var last = null;
    function focus(k, r, c, evt) {
      if (last) {
        d.panels.forEach(function (p, j) {
          heads[j][last[1]].classList.remove("msv-hot"); rowHeads[j][last[0]].classList.remove("msv-hot");
          cells[j][last[0]][last[1]].classList.remove("msv-focus");
        });
        last = null;
      }
      if (r === null) { tip.hide(); return; }
      d.panels.forEach(function (p, j) {
        heads[j][c].classList.add("msv-hot"); rowHeads[j][r].classList.add("msv-hot");
        cells[j][r][c].classList.add("msv-focus");
      });
      last = [r, c, k];
      var v = d.panels[k].values[r][c];
      var rows = [(many ? d.panels[k].title + ": " : "") + rowName(d, r) + " \u00d7 " + colName(d, c),
        ["row", rowName(d, r)], ["column", colName(d, c)], [d.value_name, v === null ? "none (blank)" : fmt(v)]];
      if (many) d.panels.forEach(function (p, j) {
        if (j !== k) rows.push([p.title, fmt(p.values[r][c])]);
      });
      tip.show(evt, rows);
    }
  }

  // ---------------------------------------------------------------- SVG helpers
  // the SVG namespace, as the HTML parser assigns it (no URL in the page: a view never names anything outside it)
  var SVGNS = (function () { var t = document.createElement("div"); t.innerHTML = "<svg></svg>"; return t.firstChild.namespaceURI; })();
  function svg(tag, attrs, text) {
    var n = document.createElementNS(SVGNS, tag);
    if (attrs) Object.keys(attrs).forEach(function (a) { n.setAttribute(a, attrs[a]); });
    if (text !== undefined && text !== null) n.textContent = text;
    return n;
  }

  // ---------------------------------------------------------------- circuit graph
  var KIND_FILL = { input: "#eeeeee", logits: "#eeeeee", head: "#deebf7", attn: "#deebf7", mixer: "#efedf5",
    mlp: "#e5f5e0" };
  var PORT_DX = { q: -1 / 3, k: 0, v: 1 / 3 };

  function circuitGraph(body, d, tip) {
    var bar = el("div", "msv-controls");
    var key = el("span", "msv-graph-key");
    [["#b2182b", "positive"], ["#2166ac", "negative"]].forEach(function (p) {
      var sw = el("span", "msv-swatch"); sw.style.background = p[0];
      key.appendChild(sw); key.appendChild(el("span", null, " " + p[1] + "  "));
    });
    key.appendChild(el("span", null, " \u00b7 width \u221d |" + d.score_name + "| (max " + fmt(d.max_abs) + ");  q k v: a head's input ports"));
    bar.appendChild(key);
    bar.appendChild(el("span", "msv-hint", "Hover or click an edge or a node."));
    body.appendChild(bar);
    var wrap = el("div", "msv-scroll msv-graph-scroll");
    var root = svg("svg", { width: d.width, height: d.height, viewBox: "0 0 " + d.width + " " + d.height,
      "class": "msv-graph" });
    wrap.appendChild(root); body.appendChild(wrap);

    d.rows.forEach(function (row) {
      root.appendChild(svg("line", { x1: 56, x2: d.width - 8, y1: row.y, y2: row.y, "class": "msv-graph-rule" }));
      root.appendChild(svg("text", { x: 8, y: row.y + 4, "class": "msv-graph-row" }, row.label));
    });

    function anchorIn(e) {
      var t = d.nodes[e.target], s = d.nodes[e.source];
      if (Math.abs(t.y - s.y) < 1) return [t.x, t.y - t.h / 2, true];  // same row: into the top
      return [t.x + (e.port ? PORT_DX[e.port] * t.w : 0), t.y + t.h / 2, false];
    }
    function path(e) {
      var s = d.nodes[e.source], a = anchorIn(e), sx = s.x, sy = s.y - s.h / 2, tx = a[0], ty = a[1];
      if (a[2]) return "M" + sx + "," + sy + " C" + sx + "," + (sy - 40) + " " + tx + "," + (ty - 40) + " " + tx + "," + ty;
      var dy = Math.max(30, Math.abs(sy - ty) / 2), down = ty > sy ? -1 : 1;
      return "M" + sx + "," + sy + " C" + sx + "," + (sy - dy * down) + " " + tx + "," + (ty + dy * down) + " " + tx + "," + ty;
    }

    var edgeLayer = svg("g"), portLayer = svg("g"), nodeLayer = svg("g");
    root.appendChild(edgeLayer); root.appendChild(portLayer); root.appendChild(nodeLayer);
    var order = d.edges.map(function (e, i) { return i; });
    order.sort(function (a, b) { return Math.abs(d.edges[a].score) - Math.abs(d.edges[b].score); });  // strong on top
    var edgeEls = [], pinned = null;
    order.forEach(function (i) {
      var e = d.edges[i], w = 0.6 + 5.4 * Math.abs(e.score) / d.max_abs;
      var g = svg("g", { "class": "msv-edge", "data-edge": String(i) });
      var p = path(e);
      g.appendChild(svg("path", { d: p, "class": "msv-edge-line", stroke: e.score >= 0 ? "#b2182b" : "#2166ac",
        "stroke-width": w.toFixed(2) }));
      g.appendChild(svg("path", { d: p, "class": "msv-edge-hit" }));
      g.addEventListener("mouseenter", function (evt) { if (pinned === null) highlight("edge", i); tip.show(evt, edgeTip(i)); });
      g.addEventListener("mousemove", function (evt) { tip.show(evt, edgeTip(i)); });
      g.addEventListener("mouseleave", function () { if (pinned === null) highlight(null); tip.hide(); });
      g.addEventListener("click", function (evt) { evt.stopPropagation(); pin("edge", i); });
      edgeLayer.appendChild(g);
      edgeEls[i] = g;
    });

    // port letters under each head that has an edge into that port
    var ports = {};
    d.edges.forEach(function (e) { if (e.port && !anchorIn(e)[2]) ports[e.target + ":" + e.port] = [e.target, e.port]; });
    Object.keys(ports).forEach(function (k) {
      var n = d.nodes[ports[k][0]], p = ports[k][1];
      portLayer.appendChild(svg("text", { x: n.x + PORT_DX[p] * n.w + 3, y: n.y + n.h / 2 + 11,
        "class": "msv-port" }, p));
    });

    var nodeEls = [];
    d.nodes.forEach(function (n, i) {
      var g = svg("g", { "class": "msv-node", "data-node": n.name });
      var fill = KIND_FILL[n.kind];
      if (n.score !== null) fill = css(ramp("diverging", 0.5 + 0.5 * n.score / d.node_max_abs));
      var rect = svg("rect", { x: n.x - n.w / 2, y: n.y - n.h / 2, width: n.w, height: n.h, rx: 5, fill: fill });
      g.appendChild(rect);
      var light = n.score === null || ink(ramp("diverging", 0.5 + 0.5 * n.score / d.node_max_abs)) !== "#fff";
      g.appendChild(svg("text", { x: n.x, y: n.y + 4, "class": "msv-node-label" + (light ? "" : " msv-on-dark") }, n.name));
      g.addEventListener("mouseenter", function (evt) { if (pinned === null) highlight("node", i); tip.show(evt, nodeTip(i)); });
      g.addEventListener("mouseleave", function () { if (pinned === null) highlight(null); tip.hide(); });
      g.addEventListener("click", function (evt) { evt.stopPropagation(); pin("node", i); });
      nodeLayer.appendChild(g);
      nodeEls.push(g);
    });
    root.addEventListener("click", function () { pinned = null; highlight(null); });

    function pin(what, i) {
      var same = pinned && pinned[0] === what && pinned[1] === i;
      pinned = same ? null : [what, i];
      highlight(same ? null : what, i);
    }
    function highlight(what, i) {
      root.classList.toggle("msv-dim", what !== null);
      d.edges.forEach(function (e, j) {
        var on = (what === "edge" && j === i) || (what === "node" && (e.source === i || e.target === i));
        edgeEls[j].classList.toggle("msv-on", on);
        edgeEls[j].classList.toggle("msv-pinned", !!pinned && on);
      });
      nodeEls.forEach(function (g, j) {
        var on = what === "node" ? j === i : (what === "edge" && (d.edges[i].source === j || d.edges[i].target === j));
        g.classList.toggle("msv-on", on);
      });
    }
    function edgeTip(i) {
      var e = d.edges[i];
      var rows = [d.nodes[e.source].name + " \u2192 " + d.nodes[e.target].name + (e.port ? " (" + e.port + ")" : ""),
        [d.score_name, fmt(e.score)]];
      Object.keys(e.extra).forEach(function (k) { rows.push([k, fmt(e.extra[k])]); });
      return rows;
    }
    function nodeTip(i) {
      var n = d.nodes[i], nin = 0, nout = 0;
      d.edges.forEach(function (e) { if (e.target === i) nin++; if (e.source === i) nout++; });
      var rows = [n.name, ["kind", n.kind]];
      if (n.layer !== null) rows.push(["layer", String(n.layer)]);
      if (n.score !== null) rows.push(["score", fmt(n.score)]);
      Object.keys(n.extra).forEach(function (k) { rows.push([k, fmt(n.extra[k])]); });
      rows.push(["edges in / out", nin + " / " + nout]);
      return rows;
    }
  }

  // ---------------------------------------------------------------- line chart
  var PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf"];

  function lineChart(body, d, tip) {
    if (d.series.length > 1) {
      var bar = el("div", "msv-controls msv-chart-key");
      d.series.forEach(function (s, k) {
        var item = el("span", "msv-chart-item"), sw = el("span", "msv-swatch");
        sw.style.background = PALETTE[k % PALETTE.length];
        item.appendChild(sw); item.appendChild(el("span", null, " " + s.label));
        bar.appendChild(item);
      });
      body.appendChild(bar);
    }
    var W = 640, H = 340, L = 64, R = 16, T = 12, B = 48, pw = W - L - R, ph = H - T - B;
    var root = svg("svg", { width: W, height: H, viewBox: "0 0 " + W + " " + H, "class": "msv-chart" });
    body.appendChild(root);
    function fx(x) {
      var a = d.x_range[0], b = d.x_range[1];
      if (d.log_x) { x = Math.log10(x); a = Math.log10(a); b = Math.log10(b); }
      return L + (b === a ? 0.5 : (x - a) / (b - a)) * pw;
    }
    function fy(y) {
      var a = d.y_range[0], b = d.y_range[1];
      return T + ph - (b === a ? 0.5 : (y - a) / (b - a)) * ph;
    }
    d.y_ticks.forEach(function (t) {
      root.appendChild(svg("line", { x1: L, x2: L + pw, y1: fy(t), y2: fy(t), "class": "msv-grid" }));
      root.appendChild(svg("text", { x: L - 6, y: fy(t) + 4, "class": "msv-tick msv-tick-y" }, fmt(t)));
    });
    d.x_ticks.forEach(function (t) {
      root.appendChild(svg("line", { x1: fx(t), x2: fx(t), y1: T, y2: T + ph, "class": "msv-grid" }));
      root.appendChild(svg("text", { x: fx(t), y: T + ph + 16, "class": "msv-tick msv-tick-x" }, fmt(t)));
    });
    root.appendChild(svg("rect", { x: L, y: T, width: pw, height: ph, "class": "msv-frame" }));
    if (d.x_label) root.appendChild(svg("text", { x: L + pw / 2, y: H - 8, "class": "msv-axis-label" }, d.x_label));
    if (d.y_label) root.appendChild(svg("text", { x: 14, y: T + ph / 2, "class": "msv-axis-label",
      transform: "rotate(-90 14 " + (T + ph / 2) + ")" }, d.y_label));
    var marks = [];
    d.series.forEach(function (s, k) {
      var col = PALETTE[k % PALETTE.length], p = "", pen = false, dots = [];
      s.y.forEach(function (y, i) {
        if (y === null) { pen = false; dots.push(null); return; }
        p += (pen ? "L" : "M") + fx(d.x[i]).toFixed(1) + "," + fy(y).toFixed(1) + " ";
        pen = true;
        dots.push([fx(d.x[i]), fy(y)]);
      });
      root.appendChild(svg("path", { d: p, "class": "msv-line", stroke: col, "data-series": String(k) }));
      var g = svg("g", { "class": "msv-points" });
      marks.push(dots.map(function (xy, i) {
        if (xy === null) return null;
        var c = svg("circle", { cx: xy[0], cy: xy[1], r: 3, fill: col, "class": "msv-point",
          "data-series": String(k), "data-index": String(i) });
        g.appendChild(c);
        return c;
      }));
      root.appendChild(g);
    });
    var guide = svg("line", { y1: T, y2: T + ph, "class": "msv-guide", visibility: "hidden" });
    root.appendChild(guide);
    var hit = svg("rect", { x: L, y: T, width: pw, height: ph, "class": "msv-hit" });
    root.appendChild(hit);
    var shown = null;
    hit.addEventListener("mousemove", function (evt) {
      var box = root.getBoundingClientRect(), mx = evt.clientX - box.left, best = 0;
      d.x.forEach(function (x, i) { if (Math.abs(fx(x) - mx) < Math.abs(fx(d.x[best]) - mx)) best = i; });
      show(best, evt);
    });
    hit.addEventListener("mouseleave", function () { show(null); });
    function show(i, evt) {
      if (shown !== null) marks.forEach(function (m) { if (m[shown]) m[shown].setAttribute("r", 3); });
      shown = i;
      if (i === null) { guide.setAttribute("visibility", "hidden"); tip.hide(); return; }
      guide.setAttribute("x1", fx(d.x[i])); guide.setAttribute("x2", fx(d.x[i]));
      guide.setAttribute("visibility", "visible");
      marks.forEach(function (m) { if (m[i]) m[i].setAttribute("r", 5); });
      var rows = [(d.x_label || "x") + " = " + fmt(d.x[i])];
      d.series.forEach(function (s) { rows.push([d.series.length > 1 ? s.label : (d.y_label || "y"), fmt(s.y[i])]); });
      tip.show(evt, rows);
    }
  }

  // ---------------------------------------------------------------- entry point
  var RENDERERS = { attention: attention, token_colors: tokenColors, lens_table: lensTable, heatmap: heatmap,
    heatmaps: heatmaps, circuit_graph: circuitGraph, line_chart: lineChart };

  function render(root) {
    if (!root || root.getAttribute("data-msv-rendered")) return;
    root.setAttribute("data-msv-rendered", "1");
    var source = root.querySelector("script.msv-data"), d = JSON.parse(source.textContent);
    var fallback = root.querySelector(".msv-nojs");
    if (fallback) fallback.parentNode.removeChild(fallback);
    var body = el("div", "msv-body");
    if (d.title) body.appendChild(el("div", "msv-title", d.title));
    root.appendChild(body);
    RENDERERS[d.kind](body, d, new Tip(root));
  }

  window.mechscopeViews = { version: VERSION, render: render };
})();
