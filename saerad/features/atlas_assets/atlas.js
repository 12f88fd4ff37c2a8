/* SAE-Rad feature atlas: renders the index (sort, filter, search) and the feature pages from the data
   the <script> files put on window (no fetch: the atlas opens from file://). */
"use strict";

(function () {
  const INDEX = window.ATLAS_INDEX;
  const CITATIONS = window.ATLAS_CITATIONS || null;

  function el(tag, attributes, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attributes || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function svg(tag, attributes, text) {
    const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [key, value] of Object.entries(attributes || {})) node.setAttribute(key, value);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function fmt(value, digits) {
    if (value === null || value === undefined || Number.isNaN(value)) return "n/a";
    return Number(value).toFixed(digits === undefined ? 2 : digits);
  }
  function percent(value) {
    if (value === null || value === undefined) return "n/a";
    return value >= 0.01 ? (100 * value).toFixed(1) + " %" : (100 * value).toFixed(2) + " %";
  }
  function findingName(name) { return name ? String(name).replace(/_/g, " ") : "n/a"; }
  function na(text) { return el("span", { class: "na" }, text); }

  function indexRows() {
    const columns = INDEX.columns;
    return INDEX.rows.map(row => Object.fromEntries(columns.map((name, k) => [name, row[k]])));
  }

  function citationCount(feature) {
    if (!CITATIONS || !CITATIONS.config) return null;
    const counts = CITATIONS.counts[CITATIONS.config] || {};
    return counts[String(feature)] || 0;
  }

  /* ---------- search: sklearn TfidfVectorizer's query analysis, on the Python search's fitted index ---------- */

  function makeScorer(search) {
    const column = new Map(search.vocabulary.map((term, k) => [term, k]));
    const stop = new Set(search.stop_words);
    const tokenPattern = search.token_pattern.replace(/^\(\?u\)/, "");  // Python's unicode flag: no JS equivalent, none needed
    const synonyms = search.synonyms.map(([pattern, replacement]) => [new RegExp(pattern, "g"), replacement]);
    return function score(query) {
      let text = query.toLowerCase();
      for (const [pattern, replacement] of synonyms) text = text.replace(pattern, replacement);
      const tokens = (text.match(new RegExp(tokenPattern, "g")) || []).filter(t => !stop.has(t));
      const counts = new Map();
      for (let n = 1; n <= search.ngram_max; n++) {
        for (let i = 0; i + n <= tokens.length; i++) {
          const k = column.get(tokens.slice(i, i + n).join(" "));
          if (k !== undefined) counts.set(k, (counts.get(k) || 0) + 1);
        }
      }
      const weights = new Map();
      let norm = 0;
      for (const [k, tf] of counts) {
        const w = (search.sublinear_tf ? 1 + Math.log(tf) : tf) * search.idf[k];
        weights.set(k, w);
        norm += w * w;
      }
      norm = Math.sqrt(norm);
      const scores = new Map();
      if (norm === 0) return scores;
      search.rows.forEach((row, r) => {
        let dot = 0;
        for (const [k, w] of row) { const q = weights.get(k); if (q !== undefined) dot += q * w; }
        if (dot > 0) scores.set(search.features[r], dot / norm);
      });
      return scores;
    };
  }

  /** [[feature, score], ...] best first, ties by feature id: the order FeatureSearch.features_for gives. */
  function rankQuery(query) {
    const scores = makeScorer(INDEX.search)(query);
    return [...scores.entries()].sort((a, b) => (b[1] - a[1]) || (a[0] - b[0]));
  }
  window.atlasRankQuery = rankQuery;  // for tests comparing with the Python ranking

  /* ---------- index page ---------- */

  const COLUMNS = [
    { key: "feature", label: "Feature", num: true },
    { key: "text", label: "Description (or why flagged)" },
    { key: "density", label: "Density", num: true },
    { key: "max", label: "Largest", num: true },
    { key: "explanation_auroc", label: "Expl. AUROC", num: true },
    { key: "aligned_finding", label: "Aligned finding" },
    { key: "finding_auroc", label: "Finding AUROC", num: true },
    { key: "purity", label: "Purity", num: true },
    { key: "cited", label: "Cited by", num: true },
  ];

  function renderIndex() {
    const rows = indexRows();
    rows.forEach(row => { row.cited = citationCount(row.feature); });
    const search = document.getElementById("search");
    const status = document.getElementById("status");
    const finding = document.getElementById("finding");
    const densityMin = document.getElementById("density-min");
    const densityMax = document.getElementById("density-max");
    const count = document.getElementById("count");
    const head = document.querySelector("#features thead tr");
    const body = document.querySelector("#features tbody");
    const scorer = makeScorer(INDEX.search);
    const state = { key: "feature", descending: false, current: 0 };

    for (const name of [...new Set(rows.map(r => r.aligned_finding).filter(Boolean))].sort()) {
      finding.append(el("option", { value: name }, findingName(name)));
    }
    for (const column of COLUMNS) {
      const button = el("button", { type: "button", "data-key": column.key }, column.label);
      const cell = el("th", { class: column.num ? "num" : null, scope: "col", "aria-sort": "none" }, button);
      button.addEventListener("click", () => {
        state.descending = state.key === column.key ? !state.descending : column.num && column.key !== "feature";
        state.key = column.key;
        update();
      });
      head.append(cell);
    }

    function cells(row) {
      const link = el("a", { href: `features/${row.feature}.html` }, String(row.feature));
      const text = row.status === "ok" ? row.text : "Flagged: " + (row.text || "no description");
      return [
        el("td", { class: "num" }, link),
        el("td", { class: "text" + (row.status === "ok" ? "" : " flagged") }, text),
        el("td", { class: "num" }, percent(row.density)),
        el("td", { class: "num" }, fmt(row.max, 2)),
        el("td", { class: "num" }, fmt(row.explanation_auroc, 2)),
        el("td", {}, findingName(row.aligned_finding)),
        el("td", { class: "num" }, fmt(row.finding_auroc, 2)),
        el("td", { class: "num" }, fmt(row.purity, 2)),
        el("td", { class: "num" }, row.cited === null ? "n/a" : String(row.cited)),
      ];
    }

    function compare(a, b) {
      const x = a[state.key], y = b[state.key];
      const missingX = x === null || x === undefined || x === "", missingY = y === null || y === undefined || y === "";
      if (missingX !== missingY) return missingX ? 1 : -1;  // missing values last either way
      let order = 0;
      if (!missingX) order = typeof x === "string" ? x.localeCompare(y) : x - y;
      if (state.descending) order = -order;
      return order || a.feature - b.feature;
    }

    function update() {
      const query = search.value.trim();
      const low = densityMin.value === "" ? -Infinity : Number(densityMin.value) / 100;
      const high = densityMax.value === "" ? Infinity : Number(densityMax.value) / 100;
      let shown = rows.filter(row => (status.value === "all" || row.status === status.value)
        && (!finding.value || row.aligned_finding === finding.value)
        && row.density >= low && row.density <= high);
      let scores = null;
      if (query) {
        scores = scorer(query);
        shown = shown.filter(row => scores.has(row.feature));
        shown.sort((a, b) => (scores.get(b.feature) - scores.get(a.feature)) || (a.feature - b.feature));
      } else {
        shown.sort(compare);
      }
      head.querySelectorAll("th").forEach((cell, k) => {
        const active = !query && COLUMNS[k].key === state.key;
        cell.setAttribute("aria-sort", active ? (state.descending ? "descending" : "ascending") : "none");
      });
      body.replaceChildren(...shown.map(row => el("tr", { "data-feature": row.feature }, ...cells(row))));
      state.current = 0;
      markCurrent();
      const what = query ? `${shown.length} matching "${query}", best match first` : `${shown.length} of ${rows.length} live features`;
      count.textContent = what + (CITATIONS && CITATIONS.config ? `; "Cited by" counts SAE-Rad reports (configuration ${CITATIONS.config})`
        : "; citations: n/a (the reports chapter has not run)");
    }

    function markCurrent() {
      const all = body.querySelectorAll("tr");
      all.forEach((row, k) => row.classList.toggle("current", k === state.current));
    }

    function move(step) {
      const all = body.querySelectorAll("tr");
      if (!all.length) return;
      state.current = Math.max(0, Math.min(all.length - 1, state.current + step));
      markCurrent();
      const link = all[state.current].querySelector("a");
      link.focus();
    }

    for (const control of [search, status, finding, densityMin, densityMax]) {
      control.addEventListener("input", update);
    }
    document.addEventListener("keydown", event => {
      const typing = ["INPUT", "SELECT", "TEXTAREA"].includes(document.activeElement.tagName);
      if (event.key === "/" && !typing) { event.preventDefault(); search.focus(); search.select(); return; }
      if (event.key === "Escape" && document.activeElement === search) { search.value = ""; update(); return; }
      if (event.key === "Enter" && document.activeElement === search) {
        const first = body.querySelector("tr a");
        if (first) window.location.href = first.getAttribute("href");
        return;
      }
      if (typing || event.ctrlKey || event.metaKey || event.altKey) return;
      if (event.key === "j" || event.key === "ArrowDown") { event.preventDefault(); move(1); }
      if (event.key === "k" || event.key === "ArrowUp") { event.preventDefault(); move(-1); }
    });
    update();
  }

  /* ---------- feature page ---------- */

  const BANDS = {
    "top": "Top-activating training studies (the ones the description was written from)",
    "q75-95": "Activation between the 75th and 95th percentile of its non-zero activations",
    "q50-75": "Between the 50th and 75th percentile",
    "q25-50": "Between the 25th and 50th percentile",
    "q0-25": "Weakest quarter of its non-zero activations",
  };

  function histogram(data, maxActivation) {
    const width = 460, height = 210, left = 52, right = 14, top = 12, bottom = 48;
    const figure = el("figure", { class: "histogram-figure" });
    if (!data.counts.length) {
      figure.append(na("It fires on no image: no histogram."));
      return figure;
    }
    const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "histogram", role: "img",
      "aria-label": `Histogram of the feature's non-zero activations, 0 to ${fmt(maxActivation, 2)}` });
    const peak = Math.max(...data.counts);
    const edges = data.edges, span = edges[edges.length - 1] - edges[0] || 1;
    const x = value => left + (value - edges[0]) / span * (width - left - right);
    const y = count => height - bottom - count / peak * (height - top - bottom);
    data.counts.forEach((count, k) => {
      if (!count) return;
      const bar = svg("rect", { class: "bar", x: x(edges[k]) + 0.5, y: y(count),
        width: Math.max(1, x(edges[k + 1]) - x(edges[k]) - 1), height: height - bottom - y(count) });
      bar.append(svg("title", {}, `${fmt(edges[k], 3)} – ${fmt(edges[k + 1], 3)}: ${count} images`));
      chart.append(bar);
    });
    chart.append(svg("path", { class: "axis", d: `M${left},${top} V${height - bottom} H${width - right}`, fill: "none" }));
    for (const tick of [0, 0.5, 1]) {
      const value = edges[0] + tick * span;
      chart.append(svg("line", { x1: x(value), x2: x(value), y1: height - bottom, y2: height - bottom + 5 }));
      chart.append(svg("text", { x: x(value), y: height - bottom + 18, "text-anchor": tick === 0 ? "start" : tick === 1 ? "end" : "middle" }, fmt(value, 2)));
    }
    for (const tick of [0, peak]) {
      chart.append(svg("line", { x1: left - 5, x2: left, y1: y(tick), y2: y(tick) }));
      chart.append(svg("text", { x: left - 8, y: y(tick) + 4, "text-anchor": "end" }, String(tick)));
    }
    chart.append(svg("text", { x: (left + width - right) / 2, y: height - 6, "text-anchor": "middle" }, "activation (non-zero only)"));
    chart.append(svg("text", { x: 14, y: (top + height - bottom) / 2, "text-anchor": "middle",
      transform: `rotate(-90 14 ${(top + height - bottom) / 2})` }, "images"));
    figure.append(chart, el("figcaption", {},
      `${data.counts.reduce((a, b) => a + b, 0)} images where it fires, in ${data.counts.length} bins; ` +
      `${data.zeros} images where it is silent are not drawn.`));
    return figure;
  }

  function colour(level) {  // level in [-1, 1]: red pushes the feature up, blue pushes it down
    const a = Math.min(1, Math.abs(level)) * 0.6;
    return level >= 0 ? `rgba(220,30,20,${a})` : `rgba(30,80,220,${a})`;
  }

  function heatCanvas(cells, grid, label) {
    const [rows, columns] = grid;
    const canvas = el("canvas", { width: columns, height: rows, "aria-hidden": "true", "data-cells": cells.join(",") });
    const context = canvas.getContext("2d");
    cells.forEach((value, k) => {
      context.fillStyle = colour(value / 99);
      context.fillRect(k % columns, Math.floor(k / columns), 1, 1);
    });
    canvas.title = label;
    return canvas;
  }

  function exampleCard(example, feature, record, meta) {
    const [study, view, split] = window.ATLAS_IMAGES[example.image];
    const report = window.ATLAS_REPORTS[String(study)] || "";
    const thumb = el("div", { class: "thumb" },
      el("img", { src: `../thumbs/${example.image}.jpg`,
        alt: `Radiograph, study ${study}, ${view} view, ${split} split; feature ${feature} activation ${fmt(example.activation, 3)}` }));
    if (meta.has_heatmaps && example.map) {
      thumb.append(heatCanvas(example.map, meta.grid,
        `Heat map: cells from ${fmt(Math.min(...example.map) / 99 * record.map_scale, 2)} to ${fmt(Math.max(...example.map) / 99 * record.map_scale, 2)}` +
        (example.map_remainder === undefined ? "" : `; remainder (no patch) ${fmt(example.map_remainder, 2)}`)));
    }
    return el("figure", { class: "example", "data-image": example.image },
      thumb,
      el("figcaption", {},
        el("span", { class: "activation" }, `activation ${fmt(example.activation, 3)}`),
        ` · study ${study} · ${view} · ${split}`),
      el("p", { class: "report" }, report || "(no report text)"));
  }

  function explanationSection(record, meta) {
    const section = el("section", { id: "explanation" }, el("h2", {}, "Explanation score"));
    const score = record.explanation;
    if (!meta.explanation_saved) { section.append(el("p", {}, na("n/a: the explanation scores were not saved."))); return section; }
    if (!score) {
      section.append(el("p", {}, na(record.status === "ok" ? "n/a: not scored." : "n/a: flagged features have no description to score.")));
      return section;
    }
    section.append(el("p", {},
      `A scorer read only the description and held-out reports (${score.n_activating} where the feature fires, ` +
      `${score.n_silent} where it is silent) and gave each a probability that the feature fires. `,
      el("strong", {}, `AUROC ${fmt(score.auroc, 2)}`), `, precision ${fmt(score.precision, 2)}, recall ${fmt(score.recall, 2)} at 0.5.`,
      score.problem ? ` Problem: ${score.problem}.` : ""));
    if (record.scored === null) {
      section.append(el("p", {}, na("n/a: scored examples not saved.")));
      return section;
    }
    if (!record.scored.length) { section.append(el("p", {}, na("No scored examples."))); return section; }
    const table = el("table", { class: "scored" }, el("thead", {}, el("tr", {},
      el("th", { scope: "col" }, "Study"), el("th", { scope: "col" }, "Fires?"), el("th", { class: "num", scope: "col" }, "Scorer"),
      el("th", { scope: "col" }, "Scorer right?"), el("th", { scope: "col" }, "Report"))));
    const body = el("tbody");
    for (const item of record.scored) {
      const right = item.right === null ? na("n/a") : el("span", { class: item.right ? "right" : "wrong" }, item.right ? "✓ right" : "✗ wrong");
      body.append(el("tr", {}, el("td", {}, String(item.study)), el("td", {}, item.activating ? "fires" : "silent"),
        el("td", { class: "num" }, fmt(item.score, 2)), el("td", {}, right),
        el("td", { class: "report-cell" }, window.ATLAS_REPORTS[String(item.study)] || "")));
    }
    table.append(body);
    section.append(el("div", { class: "table-wrap" }, table));
    return section;
  }

  function renderFeature() {
    const record = window.ATLAS_FEATURE;
    const meta = INDEX.meta;
    const feature = record.feature;
    const order = INDEX.rows.map(row => row[0]);
    const at = order.indexOf(feature);
    const previous = at > 0 ? order[at - 1] : null, next = at >= 0 && at < order.length - 1 ? order[at + 1] : null;
    if (previous !== null) document.getElementById("previous").href = `${previous}.html`;
    if (next !== null) document.getElementById("next").href = `${next}.html`;
    document.getElementById("status-badge").append(
      el("span", { class: "badge " + record.status }, record.status === "ok" ? "described" : "flagged"));
    const root = document.getElementById("feature");
    const stats = record.stats || {};
    const cited = citationCount(feature);
    const fact = (label, value) => el("div", { class: "fact" }, el("span", { class: "label" }, label), el("span", { class: "value" }, value));
    root.append(el("div", { class: "facts" },
      fact("Density", `${percent(record.density)} (${record.fire_count} of ${meta.n_images} images)`),
      fact("Largest activation", fmt(record.max, 3)),
      fact("Median when firing", fmt(stats.q50, 3)),
      fact("Explanation AUROC", record.explanation ? fmt(record.explanation.auroc, 2) : "n/a"),
      fact("Aligned finding", `${findingName(record.alignment.finding)} (AUROC ${fmt(record.alignment.auroc, 2)})`),
      fact("Cited by", cited === null ? "n/a" : `${cited} of ${CITATIONS.reports[CITATIONS.config]} reports`)));

    const lookup = new Map(INDEX.rows.map(row => [row[0], row]));
    const neighbours = el("ul", { class: "neighbours" });
    for (const [other, cosine] of record.neighbours) {
      const row = lookup.get(other);
      const text = row ? (row[1] === "ok" ? row[2] : "flagged: " + (row[2] || "")) : "";
      neighbours.append(el("li", {}, el("a", { href: `${other}.html` }, `Feature ${other}`), " ",
        el("span", { class: "cos" }, `cos ${fmt(cosine, 3)}`), " — ", text));
    }
    const alignment = record.alignment;
    const best = alignment.best_for.length
      ? el("p", {}, "It is the best-aligned feature of: ", alignment.best_for.map(b => `${findingName(b.finding)} (AUROC ${fmt(b.auroc, 2)})`).join("; "), ".")
      : el("p", { class: "muted" }, "It is no planted finding's best-aligned feature.");
    const citedText = cited === null ? na("n/a: the reports chapter has not run.")
      : el("p", {}, `${cited} of the ${CITATIONS.reports[CITATIONS.config]} SAE-Rad reports (configuration "${CITATIONS.config}") cite this feature.`,
        Object.keys(CITATIONS.reports).length > 1 ? ` Other configurations: ${Object.keys(CITATIONS.reports).filter(c => c !== CITATIONS.config)
          .map(c => `${c}: ${(CITATIONS.counts[c] || {})[String(feature)] || 0} of ${CITATIONS.reports[c]}`).join("; ")}.` : "");

    root.append(el("div", { class: "columns" },
      el("section", { id: "histogram" }, el("h2", {}, "Activation histogram"), histogram(record.histogram, record.max)),
      el("section", { id: "context" },
        el("h2", {}, "Planted finding"),
        el("p", {}, alignment.finding
          ? `Best matching planted finding: ${findingName(alignment.finding)}, AUROC ${fmt(alignment.auroc, 2)}, purity ${fmt(alignment.purity, 2)} (share of the images it fires on that carry the finding).`
          : "n/a: no planted findings in this data set."),
        best,
        el("h2", {}, "Used in generated reports"), citedText)));

    const examples = el("section", { id: "examples" }, el("h2", {}, "Example images"));
    const legend = el("div", { class: "legend" });
    if (meta.has_heatmaps) {
      const toggle = el("input", { type: "checkbox", id: "show-maps", checked: true });
      toggle.addEventListener("change", () => document.body.classList.toggle("no-maps", !toggle.checked));
      legend.append(el("label", {}, toggle, " show heat maps"),
        el("span", { class: "colourbar" }, fmt(-record.map_scale, 2), el("span", { class: "scale", role: "img",
          "aria-label": "colour scale: blue negative, clear zero, red positive" }), fmt(record.map_scale, 2)),
        el("span", { class: "caption" }, meta.heatmap_caption || ("The map is the feature's pre-activation in each cell of the encoder's last feature map " +
          `(${meta.grid[0]} × ${meta.grid[1]}): red pushes the feature up, blue pushes it down; one scale for every image on this page. ` +
          "Where the feature fires, the mean of the cells is its activation.")));
    } else {
      legend.append(el("span", { class: "caption" }, meta.heatmap_note));
    }
    examples.append(legend);
    const groups = new Map();
    for (const example of record.examples) {
      if (!groups.has(example.band)) groups.set(example.band, []);
      groups.get(example.band).push(example);
    }
    if (!record.examples.length) examples.append(na("No image to show: it fires on none."));
    for (const [band, items] of groups) {
      examples.append(el("h3", {}, BANDS[band] || band),
        el("div", { class: "examples" }, ...items.map(item => exampleCard(item, feature, record, meta))));
    }
    root.append(examples, explanationSection(record, meta),
      el("section", { id: "neighbours" }, el("h2", {}, "Nearest features by decoder direction"),
        el("p", { class: "muted" }, "Cosine of decoder rows among live features: near neighbours can be split versions of one concept (left / right) or one absorbing another."),
        record.neighbours.length ? neighbours : na("n/a")));

    document.addEventListener("keydown", event => {
      if (["INPUT", "SELECT", "TEXTAREA"].includes(document.activeElement.tagName)) return;
      if (event.ctrlKey || event.metaKey || event.altKey) return;
      if ((event.key === "j" || event.key === "ArrowRight") && next !== null) window.location.href = `${next}.html`;
      if ((event.key === "k" || event.key === "ArrowLeft") && previous !== null) window.location.href = `${previous}.html`;
      if (event.key === "u") window.location.href = "../index.html";
    });
  }

  if (document.body.dataset.page === "index") renderIndex();
  else if (document.body.dataset.page === "feature") renderFeature();
})();
