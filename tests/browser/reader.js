// Injected into the JupyterLab page by driver.py: finds a notebook panel, runs it,
// and reads back what each output shows. It only reports; judging is checks.py's job.
// The model side (window.jupyterapp, exposed by LabApp.expose_app_in_browser) says what
// the kernel sent; the DOM side says what the person in front of the browser sees.
(() => {
  const app = () => window.jupyterapp;
  const HANDLER_MARK = "# the handler's line";

  function panelFor(path) {
    if (!app()) return null;
    for (const w of app().shell.widgets('main')) {
      if (w.context && w.context.path === path && w.content && w.content.model) return w;
    }
    return null;
  }

  function kernelStatus(panel) {
    const s = panel && panel.sessionContext && panel.sessionContext.session;
    return s && s.kernel ? s.kernel.status : 'none';
  }

  // Ready to run: the document is loaded and a kernel is idle. Never awaits, so a page
  // that does not get there cannot hang the caller: the caller polls with a deadline.
  function prepare(path) {
    const panel = panelFor(path);
    if (!panel) return 'no panel yet';
    if (!panel.context.isReady) return 'document loading';
    if (!panel.sessionContext.isReady) return 'session starting';
    const st = kernelStatus(panel);
    return st === 'idle' ? 'ready' : `kernel ${st}`;
  }

  // Starts "Run All" and returns at once: the command's promise only settles when every
  // cell has finished, which the caller waits for with a deadline instead.
  function runAll(path) {
    const panel = panelFor(path);
    app().shell.activateById(panel.id);
    app().commands.execute('notebook:run-all-cells').catch(() => {});
    return true;
  }

  // Done when the kernel is idle and no cell is queued or running ([*]). A failed
  // cell makes JupyterLab abort the rest, which then keep no execution count:
  // checks.py reports those as "not run".
  function progress(path) {
    const panel = panelFor(path);
    if (!panel) return {done: false, status: 'no panel'};
    const cells = panel.content.widgets;
    let running = 0, counted = 0, code = 0;
    for (const cell of cells) {
      if (cell.model.type !== 'code') continue;
      code += 1;
      if (cell.model.executionCount) counted += 1;
      const prompt = cell.node.querySelector('.jp-InputPrompt');
      if (prompt && prompt.textContent.includes('*')) running += 1;
    }
    const status = kernelStatus(panel);
    // A dead kernel runs nothing more: done, and checks.py reports the cells it skipped.
    return {done: (status === 'idle' && running === 0) || status === 'dead',
            status, running, counted, code, broken: brokenImages(path)};
  }

  // Images still decoding, and widget views not attached yet, mean "not settled".
  function pending(path) {
    const panel = panelFor(path);
    if (!panel) return ['no panel'];
    const waiting = [];
    // JupyterLab's splash screen fades out over the page after it opens: until it is
    // gone, hovering anything hits the splash (a notebook opened without a run is read
    // that soon on a loaded machine).
    if (document.getElementById('jupyterlab-splash')) waiting.push('splash screen up');
    panel.content.node.querySelectorAll('.jp-OutputArea-output img').forEach((img, i) => {
      if (!img.complete) waiting.push(`image ${i} decoding`);
    });
    panel.content.widgets.forEach((cell, c) => {
      if (cell.model.type !== 'code') return;
      const outs = cell.model.outputs;
      const children = cell.node.querySelectorAll('.jp-OutputArea-child');
      for (let j = 0; j < outs.length; j++) {
        const data = outs.get(j).data || {};
        if (!data['application/vnd.jupyter.widget-view+json']) continue;
        const el = children[j] && children[j].querySelector('.jp-OutputArea-output');
        if (!el || !el.querySelector('.jupyter-widgets') && !/Error/.test(el.textContent)) {
          waiting.push(`cell ${c} widget ${j} not rendered`);
        }
      }
    });
    return waiting;
  }

  // atob gives one character per byte; the SVG's bytes are UTF-8.
  const fromBase64 = body => new TextDecoder().decode(
    Uint8Array.from(atob(body), c => c.charCodeAt(0)));

  function shapeColours(g) {
    const shape = g.querySelector('path, polygon, ellipse, rect');
    return shape ? {fill: (shape.getAttribute('fill') || '').toLowerCase(),
                    stroke: (shape.getAttribute('stroke') || '').toLowerCase()}
                 : {fill: '', stroke: ''};
  }

  function texts(el) {
    return Array.from(el.querySelectorAll('text')).map(t => t.textContent);
  }

  // What a Graphviz SVG holds: nodes (synthetic titles n0.. / b0.. / legend), edges,
  // their visible text, and each node's fill and border colours.
  function svgInfo(source) {
    const doc = new DOMParser().parseFromString(source, 'image/svg+xml');
    const err = doc.querySelector('parsererror');
    if (err || !doc.documentElement || doc.documentElement.nodeName !== 'svg') {
      return {parseError: err ? err.textContent.slice(0, 300) : 'no <svg> root'};
    }
    const title = g => {
      const t = g.querySelector(':scope > title');
      return t ? t.textContent : '';
    };
    const graph = doc.querySelector('g.graph');
    const graphText = graph
      ? Array.from(graph.querySelectorAll(':scope > text')).map(t => t.textContent) : [];
    const all = sel => Array.from(doc.querySelectorAll(sel));
    return {
      graphText,
      // lion_nb draws the legend outside the layout: a group of swatches under the graph.
      legends: all('g.lion-nb-legend').map(g => ({text: texts(g),
        swatches: Array.from(g.querySelectorAll('rect')).map(r => ({
          fill: (r.getAttribute('fill') || '').toLowerCase(),
          stroke: (r.getAttribute('stroke') || '').toLowerCase()}))})),
      nodes: all('g.node').map(g => ({title: title(g), text: texts(g), ...shapeColours(g)})),
      edges: all('g.edge').map(g => ({title: title(g), text: texts(g)})),
    };
  }

  async function imageInfo(img) {
    const src = img.getAttribute('src') || '';
    const info = {kind: src.split(':')[0], complete: img.complete, naturalWidth: img.naturalWidth,
                  naturalHeight: img.naturalHeight, width: img.getBoundingClientRect().width};
    let source = null;
    try {
      if (src.startsWith('data:image/svg+xml')) {
        const body = src.slice(src.indexOf(',') + 1);
        const base64 = /;base64,/.test(src.slice(0, src.indexOf(',') + 1));
        source = base64 ? fromBase64(body) : decodeURIComponent(body);
      } else if (src.startsWith('blob:')) {
        const resp = await fetch(src);  // ipywidgets' Image hands the bytes over as a blob
        source = await resp.text();
      }
    } catch (e) {
      info.readError = String(e);
    }
    if (source !== null && source.includes('<svg')) info.svg = svgInfo(source);
    // lion_nb shows a wide picture fitted, and the same picture at natural size inside
    // a <details> opened by a click: that second copy is the zoom, not another picture.
    info.zoomCopy = !!img.closest('.lion-nb-natural');
    const r = img.getBoundingClientRect();
    // A closed <details> still lays its content out (content-visibility: hidden).
    info.shown = r.width > 0 && r.height > 0 && img.checkVisibility();
    const frame = img.closest('.lion-nb-picture-frame');
    if (frame) info.tooltips = tooltipsOf(img, frame);
    return info;
  }

  // The tooltips of a picture shown through <img> (which shows none of its SVG's titles):
  // the titled boxes lion_nb lays over each node, and at each box's centre what the
  // browser hit-tests (the box itself, if hovering there shows its title).
  function tooltipsOf(img, frame) {
    const first = measureTooltips(img, frame);
    if (!first.areas.some(a => a.inView && !a.hit)) return first;
    // Something lay over a box (a toast, a half-rendered cell on a loaded machine):
    // look again with the picture in the middle of the view, as a person would hover it.
    img.scrollIntoView({block: 'center', inline: 'nearest'});
    return measureTooltips(img, frame);
  }

  function measureTooltips(img, frame) {
    // What can be seen of the image: the viewport, cut by every scrolling ancestor.
    // (The body's overflow is the viewport's: the body's own box, 0px high here, is not.)
    const clip = {left: 0, top: 0, right: window.innerWidth, bottom: window.innerHeight};
    for (let e = img.parentElement; e && e !== document.body; e = e.parentElement) {
      const cs = getComputedStyle(e);
      if (cs.overflowX === 'visible' && cs.overflowY === 'visible') continue;
      const b = e.getBoundingClientRect();
      clip.left = Math.max(clip.left, b.left); clip.top = Math.max(clip.top, b.top);
      clip.right = Math.min(clip.right, b.right); clip.bottom = Math.min(clip.bottom, b.bottom);
    }
    const r = img.getBoundingClientRect();
    const boxes = Array.from(frame.children).filter(e => e.classList.contains('lion-nb-tip'));
    const areas = boxes.map(box => {
      const b = box.getBoundingClientRect();
      const x = b.left + b.width / 2, y = b.top + b.height / 2;
      const inView = img.checkVisibility() && x >= clip.left && y >= clip.top
        && x < clip.right && y < clip.bottom;
      const hit = inView ? document.elementFromPoint(x, y) : null;
      // The box must lie on the image (its position survived the sanitizer).
      const onImage = b.width > 0 && b.height > 0 && b.left >= r.left - 1
        && b.right <= r.right + 1 && b.top >= r.top - 1 && b.bottom <= r.bottom + 1;
      return {title: box.getAttribute('title') || '', inView, onImage, hit: hit === box,
              hitTag: hit ? hit.tagName.toLowerCase() : null};
    });
    return {missing: areas.length === 0, areas};
  }

  const stripGlyph = t => t.replace(/^[^\p{L}\p{N}]+/u, '').trim();

  // A saga view's steps (forward order, with status) and its compensation path (in the
  // order undone), read from lion_nb's SagaView layout, live or as its snapshot: a table with "step" and "status"
  // columns, and an ordered list after a bold "Compensation path".
  function sagaInfo(el) {
    let steps = null;
    for (const table of el.querySelectorAll('table')) {
      const head = Array.from(table.querySelectorAll('tr:first-child th'))
        .map(th => th.textContent.trim());
      const iStep = head.indexOf('step'), iStatus = head.indexOf('status');
      if (iStep < 0 || iStatus < 0) continue;
      steps = Array.from(table.querySelectorAll('tr')).slice(1).map(tr => {
        const td = tr.querySelectorAll('td');
        return {step: td[iStep].textContent.trim(),
                status: stripGlyph(td[iStatus].textContent).split(' ◆')[0].trim()};
      });
      break;
    }
    if (steps === null) return null;
    let compensation = null;
    for (const b of el.querySelectorAll('b')) {
      if (b.textContent.trim() !== 'Compensation path') continue;
      const list = b.parentElement.querySelector('ol, ul');
      compensation = list ? Array.from(list.querySelectorAll('li'))
        .map(li => stripGlyph(li.textContent))
        .filter(t => !/\((compensating|compensation_failed)\)$/.test(t)) : [];  // still undoing
    }
    return {steps, compensation};
  }

  async function outputInfo(child) {
    const el = child.querySelector('.jp-OutputArea-output') || child;
    const rect = el.getBoundingClientRect();
    const info = {
      mime: el.getAttribute('data-mime-type'),
      classes: el.className,
      text: (el.innerText || '').slice(0, 4000),
      height: rect.height, width: rect.width,
      hasWidget: !!el.querySelector('.jupyter-widgets'),
      // ipywidgets 8 draws a broken-page icon and "Click to show javascript error." here.
      widgetError: !!el.querySelector('.jupyter-widgets-error-widget'),
      // The view's own box, not the output area around it (which keeps a minimum height).
      widgetHeight: Math.max(0, ...Array.from(el.querySelectorAll('.jupyter-widgets'))
        .filter(w => !w.parentElement.closest('.jupyter-widgets'))
        .map(w => w.getBoundingClientRect().height)),
      images: [], progress: [], saga: null, contrast: [],
    };
    for (const img of el.querySelectorAll('img')) info.images.push(await imageInfo(img));
    // A finished live view leaves a static snapshot (div.lion-nb-snapshot): its picture is
    // an inline <svg>, its progress bar two nested spans (outer: full width, inner: done)
    // followed by the bar's text in a <small>.
    for (const snap of el.querySelectorAll('.lion-nb-snapshot')) {
      for (const svg of snap.querySelectorAll('svg')) {
        if (svg.parentElement.closest('svg')) continue;
        const r = svg.getBoundingClientRect();
        info.images.push({kind: 'inline', complete: true, naturalWidth: r.width,
                          naturalHeight: r.height, width: r.width,
                          svg: svgInfo(new XMLSerializer().serializeToString(svg))});
      }
      for (const outer of snap.querySelectorAll('span')) {
        const inner = outer.firstElementChild;
        const label = outer.nextElementSibling;
        if (outer.style.display !== 'inline-block' || outer.children.length !== 1 || !inner
            || inner.tagName !== 'SPAN' || inner.style.display !== 'block'
            || !label || label.tagName !== 'SMALL') continue;
        const full = parseFloat(outer.style.width), done = parseFloat(inner.style.width);
        const pct = full > 0 ? `${Math.round(1000 * done / full) / 10}%` : '';
        info.progress.push({label: label.textContent, width: pct, height: '',
                            classes: 'lion-nb-static-progress', vertical: false});
      }
    }
    el.querySelectorAll('.widget-hprogress, .widget-vprogress').forEach(p => {
      const bar = p.querySelector('.progress-bar');
      const label = p.querySelector('.widget-label');
      info.progress.push({label: label ? label.textContent : '',
                          width: bar ? bar.style.width : '', height: bar ? bar.style.height : '',
                          classes: bar ? bar.className : '',
                          vertical: p.classList.contains('widget-vprogress')});
    });
    if (info.mime !== 'application/vnd.jupyter.stderr') info.contrast = await contrastOf(el);
    info.snapshot = !!el.querySelector('.lion-nb-snapshot');
    // Live (widgets) or finished (the static snapshot): the same table and list.
    if (info.hasWidget || el.querySelector('.lion-nb-snapshot')) info.saga = sagaInfo(el);
    return info;
  }

  function modelInfo(out) {
    const json = out.toJSON();
    const data = json.data || {};
    const plain = data['text/plain'];
    return {
      output_type: json.output_type,
      mimes: Object.keys(data),
      text_plain: Array.isArray(plain) ? plain.join('') : (plain || ''),
      metadata: json.metadata || {},
      name: json.name || null,
      text: json.output_type === 'stream' ? [].concat(json.text).join('').slice(0, 4000) : null,
      ename: json.ename || null, evalue: json.evalue || null,
    };
  }

  async function collect(path) {
    const panel = panelFor(path);
    const cells = [];
    let index = 0;
    for (const cell of panel.content.widgets) {
      const entry = {index: index++, type: cell.model.type, outputs: [],
                     executionCount: null, domOutputs: 0};
      if (cell.model.type === 'code') {
        entry.executionCount = cell.model.executionCount;
        entry.trusted = !!cell.model.trusted;
        entry.source = cell.model.sharedModel.getSource().slice(0, 200);
        const children = cell.node.querySelectorAll('.jp-OutputArea-child');
        entry.domOutputs = children.length;
        const outs = cell.model.outputs;
        for (let j = 0; j < outs.length; j++) {
          entry.outputs.push({model: modelInfo(outs.get(j)),
                              dom: children[j] ? await outputInfo(children[j]) : null});
        }
        // A line the cell marks as its handler's ("# the handler's line"): where its
        // traceback shows it, in px below the top of the output.
        const marked = cell.model.sharedModel.getSource().split('\n')
          .filter(line => line.includes(HANDLER_MARK))
          .map(line => line.split('#')[0].trim()).filter(Boolean);
        entry.handlerLines = marked.map(needle => ({needle,
                                                    at: textTop(path, index - 1, needle)}));
      }
      cells.push(entry);
    }
    return {path, kernel: kernelStatus(panel), cells};
  }

  // For a screenshot that shows it all: no file browser, the notebook scrolled to its
  // top; returns how tall its content is, so the viewport can be made that tall.
  function showAll(path) {
    const panel = panelFor(path);
    app().shell.collapseLeft();
    panel.content.activeCellIndex = 0;
    let node = panel.content.node, h = 0;
    for (const cell of panel.content.widgets) h += cell.node.getBoundingClientRect().height;
    for (const el of [node, ...node.querySelectorAll('.jp-WindowedPanel-outer')]) {
      el.scrollTop = 0;
      h = Math.max(h, el.scrollHeight);
    }
    return h;
  }

  // Images that show the browser's broken-image icon: loaded (complete), nothing decoded,
  // and given a box (a hidden <img>, display:none, shows nothing, so it does not count).
  function brokenImages(path) {
    const panel = panelFor(path);
    const out = [];
    if (!panel) return out;
    panel.content.widgets.forEach((cell, c) => {
      cell.node.querySelectorAll('.jp-OutputArea-output img').forEach(img => {
        const r = img.getBoundingClientRect();
        if (img.complete && img.naturalWidth === 0 && (r.width > 0 || r.height > 0)) {
          out.push({cell: c, src: (img.getAttribute('src') || '').slice(0, 40),
                    width: r.width, height: r.height});
        }
      });
    });
    return out;
  }

  // --- contrast (WCAG 2.x), from computed styles -------------------------------------------

  function rgba(text) {
    const m = /rgba?\(([^)]+)\)/.exec(text || '');
    if (!m) return null;
    const p = m[1].split(/[\s,/]+/).filter(Boolean).map(v => v.endsWith('%')
      ? parseFloat(v) / 100 : Number(v));
    return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
  }

  function over(top, bottom) {  // alpha compositing onto an opaque colour
    const a = top[3];
    return [0, 1, 2].map(i => top[i] * a + bottom[i] * (1 - a)).concat([1]);
  }

  function luminance(c) {
    const f = v => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(c[0]) + 0.7152 * f(c[1]) + 0.0722 * f(c[2]);
  }

  function ratio(a, b) {
    const la = luminance(a), lb = luminance(b);
    return (Math.max(la, lb) + 0.05) / (Math.min(la, lb) + 0.05);
  }

  const hex = c => '#' + c.slice(0, 3).map(v => Math.round(v).toString(16).padStart(2, '0'))
    .join('');

  // The opaque colour behind an element's content: its ancestors' backgrounds, composed.
  function backdrop(el) {
    const chain = [];
    for (let e = el; e && e.nodeType === 1; e = e.parentElement) chain.push(e);
    let bg = [255, 255, 255, 1];
    for (const e of chain.reverse()) {
      const c = rgba(getComputedStyle(e).backgroundColor);
      if (c && c[3] > 0) bg = over(c, bg);
    }
    return bg;
  }

  // WCAG AA: 4.5:1, or 3:1 for large text (24px, or 18.66px bold).
  function needed(cs) {
    const size = parseFloat(cs.fontSize), bold = parseInt(cs.fontWeight, 10) >= 700;
    return size >= 24 || (bold && size >= 18.66) ? 3 : 4.5;
  }

  function judge(where, text, fg, bg, cs, out) {
    const colour = over(fg, bg), need = needed(cs), r = ratio(colour, bg);
    if (r + 1e-6 < need) {
      out.push({where, text: text.trim().slice(0, 40), fg: hex(colour), bg: hex(bg),
                ratio: Math.round(r * 100) / 100, need});
    }
  }

  function htmlContrast(root, out) {
    const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
    const seen = new Set();
    for (let n = walker.nextNode(); n; n = walker.nextNode()) {
      const el = n.parentElement;
      if (!el || !n.textContent.trim() || seen.has(el) || el.closest('svg')) continue;
      seen.add(el);
      const cs = getComputedStyle(el), r = el.getBoundingClientRect();
      if (!r.width || !r.height || cs.visibility !== 'visible' || +cs.opacity === 0) continue;
      const fg = rgba(cs.color);
      if (fg) judge('html', n.textContent, fg, backdrop(el), cs, out);
    }
  }

  // Text inside an SVG (attached to the page): its fill against the shapes painted before
  // it under its centre, on top of what is behind the picture.
  function svgContrast(svg, behind, where, out) {
    const all = Array.from(svg.querySelectorAll('*'));
    const order = new Map(all.map((e, i) => [e, i]));
    const shapes = [];
    for (const s of svg.querySelectorAll('rect, polygon, ellipse, circle, path')) {
      const cs = getComputedStyle(s), fill = rgba(cs.fill);
      if (!fill || fill[3] === 0 || cs.display === 'none') continue;
      fill[3] *= parseFloat(cs.fillOpacity || '1');
      shapes.push({at: order.get(s), box: s.getBoundingClientRect(), fill});
    }
    for (const t of svg.querySelectorAll('text')) {
      if (!t.textContent.trim()) continue;
      const cs = getComputedStyle(t), fill = rgba(cs.fill);
      if (!fill) continue;
      fill[3] *= parseFloat(cs.fillOpacity || '1');
      const r = t.getBoundingClientRect();
      if (!r.width) continue;
      const cx = r.left + r.width / 2, cy = r.top + r.height / 2, at = order.get(t);
      let bg = behind;
      for (const s of shapes) {
        if (s.at < at && cx >= s.box.left && cx <= s.box.right && cy >= s.box.top
            && cy <= s.box.bottom) bg = over(s.fill, bg);
      }
      judge(where, t.textContent, fill, bg, cs, out);
    }
  }

  async function svgSource(img) {
    const src = img.getAttribute('src') || '';
    if (src.startsWith('data:image/svg+xml')) {
      const body = src.slice(src.indexOf(',') + 1);
      return /;base64,/.test(src.slice(0, src.indexOf(',') + 1)) ? fromBase64(body)
        : decodeURIComponent(body);
    }
    if (src.startsWith('blob:')) {
      const text = await (await fetch(src)).text();
      return text.includes('<svg') ? text : null;
    }
    return null;
  }

  // Every text a person reads in one output (HTML, inline SVG, SVG shown through <img>)
  // that fails WCAG AA against what is behind it.
  async function contrastOf(el) {
    const out = [];
    htmlContrast(el, out);
    for (const svg of el.querySelectorAll('svg')) {
      if (!svg.parentElement.closest('svg')) svgContrast(svg, backdrop(svg), 'svg', out);
    }
    for (const img of el.querySelectorAll('img')) {
      let source = null;
      try { source = await svgSource(img); } catch (e) { continue; }
      if (!source) continue;
      // An SVG in an <img> sees no page CSS: lay a copy out off-screen to measure it.
      const doc = new DOMParser().parseFromString(source, 'image/svg+xml');
      if (doc.querySelector('parsererror')) continue;
      const host = document.createElement('div');
      host.style.cssText = 'all:initial;position:fixed;left:0;top:0;visibility:hidden;'
        + 'pointer-events:none';
      host.appendChild(document.importNode(doc.documentElement, true));
      document.body.appendChild(host);
      try {
        svgContrast(host.firstElementChild, backdrop(img), 'img', out);
      } finally {
        host.remove();
      }
    }
    return out;
  }

  // Save the notebook; true once the file on the server matches the page.
  function save(path) {
    const panel = panelFor(path);
    if (!panel) return false;
    if (!panel.context.model.dirty && panel.__lionSaved) return true;
    if (!panel.__lionSaving) {
      panel.__lionSaving = true;
      panel.context.save().then(() => { panel.__lionSaved = true; },
                                () => { panel.__lionSaving = false; });
    }
    return false;
  }

  function setTheme(name) {
    return app().commands.execute('apputils:change-theme', {theme: name}).then(() => true);
  }

  function theme() {
    return document.body.dataset.jpThemeName || '';
  }

  // Where a frame's line shows in an output: px from the output's top (null if absent).
  function textTop(path, cellIndex, needle) {
    const panel = panelFor(path);
    const cell = panel.content.widgets[cellIndex];
    for (const el of cell.node.querySelectorAll('.jp-OutputArea-output')) {
      const nodes = [], walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
      let text = '';
      for (let n = walker.nextNode(); n; n = walker.nextNode()) {
        nodes.push([n, text.length]);
        text += n.textContent;
      }
      // The line as a frame's own line, not as context around another frame: IPython
      // marks it "---->", Python's format puts it under its 'File "…", line N, in f'.
      let at = -1;
      for (let i = text.indexOf(needle); i >= 0; i = text.indexOf(needle, i + 1)) {
        const start = text.lastIndexOf('\n', i) + 1;
        const prevStart = text.lastIndexOf('\n', Math.max(0, start - 2)) + 1;
        const line = text.slice(start, i), prev = text.slice(prevStart, start);
        if (/^\s*-+>/.test(line) || /^\s*File ".*", line \d+, in /.test(prev)) {
          at = i;
          break;
        }
      }
      if (at < 0) continue;
      let i = nodes.length - 1;
      while (nodes[i][1] > at) i -= 1;
      const range = document.createRange();
      range.setStart(nodes[i][0], at - nodes[i][1]);
      range.setEnd(nodes[i][0], Math.min(nodes[i][0].textContent.length,
                                         at - nodes[i][1] + 1));
      return {top: range.getBoundingClientRect().top - el.getBoundingClientRect().top,
              height: el.getBoundingClientRect().height};
    }
    return null;
  }

  window.__lionNb = {prepare, runAll, progress, pending, collect, showAll, brokenImages,
                     save, setTheme, theme, textTop};
})();
