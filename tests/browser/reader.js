// Injected into the JupyterLab page by driver.py: finds a notebook panel, runs it,
// and reads back what each output shows. It only reports; judging is checks.py's job.
// The model side (window.jupyterapp, exposed by LabApp.expose_app_in_browser) says what
// the kernel sent; the DOM side says what the person in front of the browser sees.
(() => {
  const app = () => window.jupyterapp;

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
            status, running, counted, code};
  }

  // Images still decoding, and widget views not attached yet, mean "not settled".
  function pending(path) {
    const panel = panelFor(path);
    if (!panel) return ['no panel'];
    const waiting = [];
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
        source = base64 ? atob(body) : decodeURIComponent(body);
      } else if (src.startsWith('blob:')) {
        const resp = await fetch(src);  // ipywidgets' Image hands the bytes over as a blob
        source = await resp.text();
      }
    } catch (e) {
      info.readError = String(e);
    }
    if (source !== null && source.includes('<svg')) info.svg = svgInfo(source);
    return info;
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
      images: [], progress: [], saga: null,
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
        entry.source = cell.model.sharedModel.getSource().slice(0, 200);
        const children = cell.node.querySelectorAll('.jp-OutputArea-child');
        entry.domOutputs = children.length;
        const outs = cell.model.outputs;
        for (let j = 0; j < outs.length; j++) {
          entry.outputs.push({model: modelInfo(outs.get(j)),
                              dom: children[j] ? await outputInfo(children[j]) : null});
        }
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

  window.__lionNb = {prepare, runAll, progress, pending, collect, showAll};
})();
