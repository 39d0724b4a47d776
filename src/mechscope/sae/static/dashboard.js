/* mechscope SAE dashboards. Each page carries its data as JSON in <script id="msd-data">; this script draws it. */
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("msd-data").textContent);
  var root = document.getElementById("msd-root");
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = text;
    return e;
  }
  function fmt(x) {
    if (x === null || x === undefined) return "–";
    var a = Math.abs(x);
    if (a === 0) return "0";
    if (a >= 1000 || a < 0.001) return x.toExponential(2);
    return x.toPrecision(3);
  }
  function show(s) { return s.replace(/\n/g, "\u21b5").replace(/\t/g, "\u21e5"); }
  var tip = el("div", "msd-tip");
  document.body.appendChild(tip);
  function hover(e, text) {
    e.addEventListener("mouseenter", function () { tip.textContent = text; tip.style.display = "block"; });
    e.addEventListener("mousemove", function (ev) {
      tip.style.left = (ev.clientX + 12) + "px"; tip.style.top = (ev.clientY + 14) + "px"; });
    e.addEventListener("mouseleave", function () { tip.style.display = "none"; });
  }

  // ----------------------------------------------------------------------------------- one latent
  function tokens(ex, left, maxAct, strs) {
    var box = el("div", "msd-ex-t");
    for (var i = 0; i < ex.t.length; i++) {
      if (ex.t[i] < 0) continue;
      var s = strs[ex.t[i]];
      if (s === undefined) s = "<" + ex.t[i] + ">";
      var span = el("span", "msd-tok" + (i === left ? " msd-centre" : ""), show(s));
      var a = ex.a[i];
      if (a > 0 && maxAct > 0) {
        span.style.background = "rgba(240,140,40," + Math.min(1, a / maxAct).toFixed(3) + ")";
      }
      span.setAttribute("data-act", String(a));
      hover(span, JSON.stringify(s) + "  act " + fmt(a) + "\nrow " + ex.row + ", pos " + (ex.pos + i - left));
      box.appendChild(span);
    }
    return box;
  }
  function examples(list, left, maxAct, strs) {
    var box = el("div", "msd-examples");
    if (!list.length) box.appendChild(el("div", "msd-empty", "no examples"));
    list.forEach(function (ex) {
      var row = el("div", "msd-ex");
      row.appendChild(el("div", "msd-ex-v", fmt(ex.v)));
      row.appendChild(tokens(ex, left, maxAct, strs));
      box.appendChild(row);
    });
    return box;
  }
  function histogram(h) {
    var W = 360, H = 120, pad = 22, ns = "http://www.w3.org/2000/svg";
    var svg = document.createElementNS(ns, "svg");
    svg.setAttribute("class", "msd-hist"); svg.setAttribute("width", W); svg.setAttribute("height", H + pad);
    var n = h.counts.length, max = Math.max.apply(null, h.counts.concat([1]));
    var bw = (W - 10) / Math.max(n, 1);
    h.counts.forEach(function (c, i) {
      var r = document.createElementNS(ns, "rect");
      var y = H - (H - 8) * c / max;
      r.setAttribute("class", "bar"); r.setAttribute("x", 5 + i * bw); r.setAttribute("width", Math.max(bw - 1, 1));
      r.setAttribute("y", y); r.setAttribute("height", H - y);
      var lo = Math.pow(10, h.lo + i / h.per_decade), hi = Math.pow(10, h.lo + (i + 1) / h.per_decade);
      var t = document.createElementNS(ns, "title");
      t.textContent = fmt(lo) + " – " + fmt(hi) + ": " + c + " tokens";
      r.appendChild(t);
      svg.appendChild(r);
    });
    var axis = document.createElementNS(ns, "line");
    axis.setAttribute("x1", 5); axis.setAttribute("x2", W - 5); axis.setAttribute("y1", H); axis.setAttribute("y2", H);
    svg.appendChild(axis);
    [0, Math.floor(n / 2), n].forEach(function (i, j) {
      var t = document.createElementNS(ns, "text");
      t.setAttribute("x", Math.min(Math.max(5 + i * bw, 5), W - 40)); t.setAttribute("y", H + 14);
      t.textContent = fmt(Math.pow(10, h.lo + i / h.per_decade));
      svg.appendChild(t);
    });
    return svg;
  }
  function logits(list, cls) {
    var t = el("table", "msd-logits");
    if (!list.length) { var r0 = t.insertRow(); r0.insertCell().textContent = "–"; }
    list.forEach(function (p) {
      var r = t.insertRow();
      var c = r.insertCell(); c.appendChild(el("span", "msd-tok", show(p[0])));
      r.insertCell().appendChild(el("span", cls, (p[1] >= 0 ? "+" : "") + p[1].toFixed(3)));
    });
    return t;
  }
  function latentPage(d) {
    var nav = el("div", "msd-nav");
    var idx = el("a", null, "\u2190 index"); idx.href = d.index; nav.appendChild(idx);
    if (d.prev !== null) { var p = el("a", null, "\u2039 latent " + d.prev); p.href = d.prev_href; nav.appendChild(p); }
    if (d.next !== null) { var q = el("a", null, "latent " + d.next + " \u203a"); q.href = d.next_href; nav.appendChild(q); }
    root.appendChild(nav);
    root.appendChild(el("h1", null, "Latent " + d.latent));
    root.appendChild(el("div", "msd-sub", d.hook + " \u00b7 " + d.n_tokens.toLocaleString("en") + " tokens"));
    var facts = el("div", "msd-facts");
    [["density", d.density === 0 ? "0 (dead)" : fmt(d.density * 100) + "%"],
     ["fires on", d.freq.toLocaleString("en") + " tokens"],
     ["max act", fmt(d.max)], ["mean act (firing)", fmt(d.mean)]].forEach(function (f) {
      var e = el("div", "msd-fact"); e.appendChild(el("b", null, f[1])); e.appendChild(el("span", null, f[0]));
      facts.appendChild(e);
    });
    root.appendChild(facts);
    var cols = el("div", "msd-cols");
    var c1 = el("div", "msd-col"); c1.appendChild(el("h2", null, "Activation histogram (log scale, firing tokens)"));
    c1.appendChild(d.hist.counts.length ? histogram(d.hist) : el("div", "msd-empty", "never fires"));
    var c2 = el("div", "msd-col"); c2.appendChild(el("h2", null, "Positive logits (W_dec \u00b7 W_U)"));
    c2.appendChild(logits(d.logits.top, "msd-pos"));
    var c3 = el("div", "msd-col"); c3.appendChild(el("h2", null, "Negative logits"));
    c3.appendChild(logits(d.logits.bottom, "msd-neg"));
    cols.appendChild(c1); cols.appendChild(c2); cols.appendChild(c3);
    root.appendChild(cols);
    var top = el("section", "msd-top"); top.appendChild(el("h2", null, "Top activations"));
    top.appendChild(examples(d.top, d.left, d.max, d.strs));
    root.appendChild(top);
    if (d.quantiles.length) {
      var qs = el("section", "msd-quantiles");
      qs.appendChild(el("h2", null, "Samples from activation intervals"));
      d.quantiles.slice().reverse().forEach(function (g) {
        var grp = el("div", "msd-group");
        grp.appendChild(el("div", "msd-group-head", "Interval " + fmt(g.lo) + " \u2013 " + fmt(g.hi) +
          "  (about " + g.n.toLocaleString("en") + " tokens)"));
        grp.appendChild(examples(g.ex, d.left, d.max, d.strs));
        qs.appendChild(grp);
      });
      root.appendChild(qs);
    }
  }

  // ----------------------------------------------------------------------------------- the index
  function indexPage(d) {
    root.appendChild(el("h1", null, d.title));
    root.appendChild(el("div", "msd-sub", d.hook + " \u00b7 " + d.rows.length + " latents \u00b7 " +
      d.n_tokens.toLocaleString("en") + " tokens \u00b7 click a column to sort"));
    var filter = el("input", "msd-filter"); filter.placeholder = "filter by token text or latent";
    root.appendChild(filter);
    var cols = [["latent", 0, "num"], ["density", 1, "num"], ["max act", 2, "num"], ["mean act", 3, "num"],
                ["top activating tokens", 4, "str"], ["top logits", 5, "str"]];
    var table = el("table", "msd-index"), head = table.createTHead().insertRow(), body = table.createTBody();
    var sortCol = 1, asc = false;
    cols.forEach(function (c, i) {
      var th = el("th", null, c[0]); th.setAttribute("data-col", String(i));
      th.addEventListener("click", function () {
        if (sortCol === i) asc = !asc; else { sortCol = i; asc = c[2] === "str" || i === 0; }
        draw();
      });
      head.appendChild(th);
    });
    root.appendChild(table);
    function draw() {
      var q = filter.value.toLowerCase();
      var rows = d.rows.filter(function (r) {
        return !q || String(r[0]) === q || r[4].toLowerCase().indexOf(q) >= 0 || r[5].toLowerCase().indexOf(q) >= 0;
      });
      rows.sort(function (a, b) {
        var x = a[sortCol], y = b[sortCol], c = x < y ? -1 : x > y ? 1 : 0;
        return (asc ? c : -c) || a[0] - b[0];
      });
      Array.prototype.forEach.call(head.cells, function (th, i) {
        th.className = i === sortCol ? "msd-sorted" + (asc ? " msd-asc" : "") : "";
      });
      body.textContent = "";
      rows.forEach(function (r) {
        var tr = body.insertRow();
        if (r[1] === 0) tr.className = "msd-dead";
        var a = el("a", null, String(r[0])); a.href = r[6];
        tr.insertCell().appendChild(a);
        tr.insertCell().textContent = r[1] === 0 ? "dead" : fmt(r[1] * 100) + "%";
        tr.insertCell().textContent = fmt(r[2]);
        tr.insertCell().textContent = fmt(r[3]);
        var t1 = tr.insertCell(); t1.className = "msd-toks"; t1.textContent = r[4];
        var t2 = tr.insertCell(); t2.className = "msd-toks"; t2.textContent = r[5];
      });
    }
    filter.addEventListener("input", draw);
    draw();
  }

  if (data.kind === "index") indexPage(data); else latentPage(data);
  root.setAttribute("data-msd-rendered", "1");
})();
