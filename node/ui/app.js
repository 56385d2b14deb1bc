// ssemesh admin page: polls the topology report and draws one stream's tree
// as SVG. Everything it needs is in this file; it talks only to its own
// origin.
(function () {
  'use strict';

  var API = 'v1/topology'; // relative: works behind a path-prefixing proxy
  var POLL_MS = 2000;
  var TOKEN_KEY = 'ssemesh.adminToken';
  var STREAM_KEY = 'ssemesh.stream';
  var SVGNS = 'http://www.w3.org/2000/svg';
  var STATES = ['alive', 'suspect', 'draining', 'left', 'unreachable'];

  // Geometry, in SVG user units (pixels at 1:1).
  var BOX_W = 138, BOX_H = 44, GAP_X = 10, GAP_Y = 12;
  var DC_PAD = 12, DC_GAP = 18, DC_HEAD = 64, MARGIN_L = 58, MARGIN_R = 8;
  var BRIDGE_MIN = 16, BRIDGE_RISE = 0.02; // arcs between boxes of one row stay below the data centre titles
  var BACKEND_W = 260, BACKEND_H = 42, BACKEND_GAP = 46, TIER_GAP = 22;

  var $ = function (id) { return document.getElementById(id); };
  var last = null;       // newest report
  var selected = null;   // selected stream
  var hovered = null;    // hovered node ID
  var timer = 0;

  function storage() {
    try { return window.sessionStorage; } catch (e) { return null; }
  }
  function getToken() {
    var s = storage();
    return (s && s.getItem(TOKEN_KEY)) || '';
  }

  function initialStream() {
    var m = /(?:^#|&)stream=([^&]*)/.exec(location.hash);
    if (m) { return decodeURIComponent(m[1]); }
    var s = storage();
    return (s && s.getItem(STREAM_KEY)) || null;
  }

  function setStatus(kind, text) {
    var el = $('status');
    el.setAttribute('data-status', kind);
    el.textContent = text;
  }

  function showAuth(message) {
    $('auth').hidden = false;
    $('auth-error').textContent = message || '';
    $('token').focus();
  }

  // poll fetches the report, draws it and schedules the next round. After a
  // 401 it waits for a token instead of polling on.
  function poll() {
    clearTimeout(timer);
    var headers = { 'Accept': 'application/json' };
    var tok = getToken();
    if (tok) { headers['Authorization'] = 'Bearer ' + tok; }
    fetch(API, { headers: headers, cache: 'no-store', credentials: 'omit' }).then(function (resp) {
      if (resp.status === 401) {
        setStatus('auth', 'token needed');
        showAuth(tok ? 'That token was refused.' : '');
        return null;
      }
      if (!resp.ok) {
        return resp.text().then(function (body) {
          var reason = body;
          try { const j = JSON.parse(body); reason = j.message ? j.message + ' (' + j.error + ')' : (j.error || body); } catch (e) { /* not JSON */ }
          throw new Error('HTTP ' + resp.status + ': ' + reason);
        });
      }
      return resp.json().then(function (rep) {
        $('auth').hidden = true;
        last = rep;
        render();
        setStatus('ok', 'updated ' + new Date().toLocaleTimeString());
        timer = setTimeout(poll, POLL_MS);
      });
    }).catch(function (err) {
      // Keep the last drawing: a stale tree with a warning beats a blank one.
      setStatus('error', 'stale: ' + err.message);
      timer = setTimeout(poll, POLL_MS);
    });
  }

  $('auth').addEventListener('submit', function (ev) {
    ev.preventDefault();
    var s = storage();
    if (s) { s.setItem(TOKEN_KEY, $('token').value.trim()); }
    $('token').value = '';
    $('auth').hidden = true;
    setStatus('loading', 'loading\u2026');
    poll();
  });

  $('stream').addEventListener('change', function () {
    selected = $('stream').value;
    var s = storage();
    if (s) { s.setItem(STREAM_KEY, selected); }
    history.replaceState(null, '', '#stream=' + encodeURIComponent(selected));
    render();
  });

  function el(name, attrs, parent) {
    var e = document.createElementNS(SVGNS, name);
    for (var k in attrs) {
      if (Object.prototype.hasOwnProperty.call(attrs, k)) { e.setAttribute(k, attrs[k]); }
    }
    if (parent) { parent.appendChild(e); }
    return e;
  }
  function text(parent, x, y, cls, s) {
    var t = el('text', { x: x, y: y, 'class': cls }, parent);
    t.textContent = s;
    return t;
  }
  function title(parent, s) {
    el('title', {}, parent).textContent = s;
  }
  function clip(s, n) {
    return s.length > n ? s.slice(0, n - 1) + '\u2026' : s;
  }
  function compact(v) {
    if (v >= 1e6) { return (v / 1e6).toFixed(v >= 1e7 ? 0 : 1) + 'M'; }
    if (v >= 1e3) { return (v / 1e3).toFixed(v >= 1e4 ? 0 : 1) + 'k'; }
    return String(v);
  }
  function stateOf(n) {
    return STATES.indexOf(n.state) >= 0 ? n.state : 'unknown';
  }

  function fillStreams(streams) {
    var sel = $('stream');
    var names = streams.map(function (s) { return s.stream; }).sort();
    if (selected === null || names.indexOf(selected) < 0) {
      selected = names.length ? names[0] : null;
    }
    var want = names.join('\n');
    if (sel.getAttribute('data-names') !== want) {
      sel.textContent = '';
      streams.slice().sort(function (a, b) { return a.stream < b.stream ? -1 : a.stream > b.stream ? 1 : 0; })
        .forEach(function (s) {
          var o = document.createElement('option');
          o.value = s.stream;
          o.textContent = s.stream + (s.backend ? '  (' + s.backend + ')' : '');
          sel.appendChild(o);
        });
      sel.setAttribute('data-names', want);
    }
    sel.disabled = names.length === 0;
    if (selected !== null) { sel.value = selected; }
  }

  // layout places every node: one column per data centre, one band per
  // tier (aligned across columns), nodes of a tier in rows, sorted by ID.
  function layout(nodes, width) {
    var dcs = [], tiers = [], groups = {};
    nodes.forEach(function (n) {
      var dc = n.dc || '-', t = n.tier | 0;
      if (dcs.indexOf(dc) < 0) { dcs.push(dc); }
      if (tiers.indexOf(t) < 0) { tiers.push(t); }
      var key = dc + '\u0000' + t;
      (groups[key] = groups[key] || []).push(n);
    });
    dcs.sort();
    tiers.sort(function (a, b) { return a - b; });
    Object.keys(groups).forEach(function (k) {
      groups[k].sort(function (a, b) { return a.id < b.id ? -1 : a.id > b.id ? 1 : 0; });
    });

    var avail = Math.max(width - MARGIN_L - MARGIN_R, 480);
    var perDC = (avail - (dcs.length - 1) * DC_GAP) / Math.max(dcs.length, 1);
    var fit = Math.max(1, Math.floor((perDC - 2 * DC_PAD + GAP_X) / (BOX_W + GAP_X)));
    var cols = {}, x = MARGIN_L, colX = {}, colW = {};
    dcs.forEach(function (dc) {
      var widest = 1;
      tiers.forEach(function (t) { widest = Math.max(widest, (groups[dc + '\u0000' + t] || []).length); });
      cols[dc] = Math.min(fit, widest);
      colX[dc] = x;
      colW[dc] = Math.max(cols[dc] * (BOX_W + GAP_X) - GAP_X + 2 * DC_PAD, 170);
      x += colW[dc] + DC_GAP;
    });
    var totalW = x - DC_GAP + MARGIN_R;

    var pos = {}, tierY = {};
    var y = BACKEND_H + BACKEND_GAP + DC_HEAD;
    tiers.forEach(function (t) {
      var rows = 1;
      dcs.forEach(function (dc) {
        rows = Math.max(rows, Math.ceil((groups[dc + '\u0000' + t] || []).length / cols[dc]));
      });
      tierY[t] = { top: y, bottom: y + rows * (BOX_H + GAP_Y) - GAP_Y };
      dcs.forEach(function (dc) {
        var g = groups[dc + '\u0000' + t] || [];
        g.forEach(function (n, i) {
          var row = Math.floor(i / cols[dc]);
          var inRow = Math.min(cols[dc], g.length - row * cols[dc]);
          var rowW = inRow * (BOX_W + GAP_X) - GAP_X;
          var left = colX[dc] + (colW[dc] - rowW) / 2;
          pos[n.id] = { x: left + (i % cols[dc]) * (BOX_W + GAP_X), y: y + row * (BOX_H + GAP_Y), node: n };
        });
      });
      y = tierY[t].bottom + TIER_GAP + GAP_Y;
    });
    return { dcs: dcs, tiers: tiers, groups: groups, pos: pos, tierY: tierY, colX: colX, colW: colW,
      width: totalW, height: y - TIER_GAP };
  }

  function edgePath(x1, y1, x2, y2) {
    var dy = Math.max(28, Math.abs(y1 - y2) / 2) * (y1 >= y2 ? 1 : -1);
    return 'M' + x1 + ',' + y1 + ' C' + x1 + ',' + (y1 - dy) + ' ' + x2 + ',' + (y2 + dy) + ' ' + x2 + ',' + y2;
  }

  // bridgePath arcs over a row from one box's top to another's.
  function bridgePath(x1, y1, x2, y2) {
    var h = BRIDGE_MIN + Math.min(Math.abs(x1 - x2), 1200) * BRIDGE_RISE;
    return 'M' + x1 + ',' + y1 + ' C' + x1 + ',' + (y1 - h) + ' ' + x2 + ',' + (y2 - h) + ' ' + x2 + ',' + y2;
  }

  function render() {
    var rep = last;
    if (!rep) { return; }
    var nodes = rep.nodes || [], streams = rep.streams || [];
    fillStreams(streams);
    var stream = null;
    streams.forEach(function (s) { if (s.stream === selected) { stream = s; } });

    var unr = $('unreachable');
    unr.hidden = !(rep.unreachable && rep.unreachable.length);
    unr.textContent = unr.hidden ? '' : 'Not reached, so missing from this picture: ' + rep.unreachable.join(', ');

    var counts = {};
    nodes.forEach(function (n) { var s = stateOf(n); counts[s] = (counts[s] || 0) + 1; });
    var parts = [nodes.length + ' node' + (nodes.length === 1 ? '' : 's')];
    STATES.concat(['unknown']).forEach(function (s) { if (counts[s]) { parts.push(counts[s] + ' ' + s); } });
    if (stream) { parts.push((stream.edges || []).length + ' links'); }
    $('summary').textContent = parts.join(' \u00b7 ');

    var svg = $('tree');
    var width = Math.max(svg.parentNode.clientWidth || 1200, 640);
    var L = layout(nodes, width);
    svg.textContent = '';
    svg.setAttribute('viewBox', '0 0 ' + L.width + ' ' + L.height);
    svg.setAttribute('width', L.width);
    svg.setAttribute('height', L.height);

    var defs = el('defs', {}, svg);
    ['plain', 'cross', 'hl', 'to-backend'].forEach(function (k) {
      var m = el('marker', { id: 'arrow-' + k, viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse' }, defs);
      el('path', { d: 'M0,0 L10,5 L0,10 z', 'class': 'arrow ' + k }, m);
    });

    // Data centre columns and tier bands.
    var bandTop = BACKEND_H + BACKEND_GAP;
    L.dcs.forEach(function (dc) {
      var g = el('g', { 'class': 'dc', 'data-dc': dc }, svg);
      el('rect', { 'class': 'dc-band', x: L.colX[dc], y: bandTop, width: L.colW[dc], height: L.height - bandTop, rx: 8 }, g);
      var n = 0;
      L.tiers.forEach(function (t) { n += (L.groups[dc + '\u0000' + t] || []).length; });
      var t = text(g, L.colX[dc] + DC_PAD, bandTop + 20, 'dc-title', 'data centre ' + dc);
      var sub = el('tspan', { 'class': 'dc-sub', dx: 8 }, t);
      sub.textContent = n + ' node' + (n === 1 ? '' : 's');
    });
    L.tiers.forEach(function (t, i) {
      var ty = L.tierY[t];
      text(svg, MARGIN_L - 8, (ty.top + ty.bottom) / 2 + 4, 'tier-label', 'tier ' + t);
      if (i > 0) {
        var ry = ty.top - (TIER_GAP + GAP_Y) / 2;
        el('line', { 'class': 'tier-rule', x1: MARGIN_L, x2: L.width - MARGIN_R, y1: ry, y2: ry }, svg);
      }
    });

    // Edges first, so boxes sit on top of them.
    var parentOf = {}, carriers = {}, edgesG = el('g', { 'class': 'edges' }, svg);
    var backendPos = null;
    if (stream) {
      var edges = stream.edges || [];
      var owner = stream.owner;
      edges.forEach(function (e) { if (!e.parent && !owner) { owner = e.child; } });
      var anchor = owner && L.pos[owner] ? L.pos[owner].x + BOX_W / 2 : L.width / 2;
      var bx = Math.min(Math.max(anchor - BACKEND_W / 2, MARGIN_L), L.width - BACKEND_W - MARGIN_R);
      backendPos = { x: bx, y: 6 };
      edges.forEach(function (e) {
        var c = L.pos[e.child];
        if (!c) { return; }
        carriers[e.child] = true;
        if (!(e.child in parentOf)) { parentOf[e.child] = e.parent || ''; }
        var x1 = c.x + BOX_W / 2, kind, d;
        if (!e.parent) {
          kind = 'to-backend';
          d = edgePath(x1, c.y, backendPos.x + BACKEND_W / 2, backendPos.y + BACKEND_H);
        } else {
          var p = L.pos[e.parent];
          if (!p) { return; }
          carriers[e.parent] = true;
          kind = (p.node.dc || '-') !== (c.node.dc || '-') ? 'cross' : 'plain';
          var x2 = p.x + BOX_W / 2;
          if (Math.abs(c.y - p.y) < 1) {
            d = bridgePath(x1, c.y, x2, p.y); // same row: roots following the owner
          } else if (c.y > p.y) {
            d = edgePath(x1, c.y, x2, p.y + BOX_H);
          } else {
            d = edgePath(x1, c.y + BOX_H, x2, p.y); // a parent below its child breaks rule 1: still drawn
          }
        }
        var path = el('path', {
          'class': 'edge' + (kind === 'plain' ? '' : ' ' + kind),
          'data-edge': e.child + '->' + (e.parent || 'backend'),
          'data-child': e.child, 'data-parent': e.parent || '',
          'data-kind': kind,
          d: d,
          'marker-end': 'url(#arrow-' + kind + ')'
        }, edgesG);
        var lag = typeof e.lagMs === 'number' ? e.lagMs.toFixed(1) + ' ms' : '-';
        title(path, e.child + ' \u2192 ' + (e.parent || 'back end ' + (stream.backend || '')) +
          (kind === 'cross' ? ' (across data centres)' : '') + '\nlag ' + lag + ', ' + (e.lagEvents || 0) + ' events' +
          '\n' + (e.eventsPerSec || 0).toFixed(1) + ' events/s\nlast id ' + (e.lastEventId || '-'));
      });

      var b = el('g', { 'class': 'backend', 'data-backend': stream.backend || stream.stream,
        transform: 'translate(' + backendPos.x + ',' + backendPos.y + ')' }, svg);
      el('rect', { width: BACKEND_W, height: BACKEND_H, rx: 6 }, b);
      text(b, 10, 17, 'id', 'back end ' + clip(stream.backend || '-', 24));
      text(b, 10, 33, 'meta', clip(stream.stream, 40));
      title(b, 'back end ' + (stream.backend || '-') + '\nstream ' + stream.stream + '\nowner ' + (stream.owner || '-'));
    } else {
      text(svg, MARGIN_L, 28, 'note', streams.length ? 'stream ' + selected + ' is not in the report' :
        'No stream is open anywhere in the mesh yet: streams appear when a client subscribes.');
    }

    // Node boxes.
    var nodesG = el('g', { 'class': 'nodes' }, svg);
    nodes.forEach(function (n) {
      var p = L.pos[n.id];
      if (!p) { return; }
      var st = stateOf(n);
      var cls = 'node ' + st;
      if (stream && !carriers[n.id]) { cls += ' idle'; }
      if (stream && stream.owner === n.id) { cls += ' owner'; }
      var g = el('g', { 'class': cls, 'data-node': n.id, 'data-state': st, 'data-dc': n.dc || '-',
        'data-tier': n.tier | 0, transform: 'translate(' + p.x + ',' + p.y + ')' }, nodesG);
      el('rect', { width: BOX_W, height: BOX_H, rx: 6 }, g);
      text(g, 8, 17, 'id', clip(n.id, 19));
      var cl = compact(n.clients || 0) + (n.capacity ? '/' + compact(n.capacity) : '') + ' cl';
      var meta = 't' + (n.tier | 0) + ' \u00b7 ' + cl + ' \u00b7 ' + (n.streams || 0) + ' st';
      text(g, 8, 34, 'meta', meta);
      title(g, n.id + (stream && stream.owner === n.id ? ' (owner: holds the back-end connection)' : '') + '\n' + st + (n.reachable === false ? ' (not reached' + (n.error ? ': ' + n.error : '') + ')' : '') +
        '\ndata centre ' + (n.dc || '-') + ', tier ' + (n.tier | 0) +
        '\nclients ' + (n.clients || 0) + (n.capacity ? ' of ' + n.capacity : '') + ', streams ' + (n.streams || 0) +
        '\nclient ' + (n.clientAddr || '-') + '\nadmin ' + (n.adminAddr || '-') +
        (stream ? '\nupstream ' + (n.id in parentOf ? (parentOf[n.id] || 'back end') : '(does not carry this stream)') : ''));
      g.addEventListener('mouseenter', function () { hovered = n.id; highlight(parentOf); });
      g.addEventListener('mouseleave', function () { hovered = null; highlight(parentOf); });
    });
    highlight(parentOf);
  }

  // highlight marks the hovered node's path up to the back end.
  function highlight(parentOf) {
    var svg = $('tree');
    var onPath = {};
    var cur = hovered, guard = 0;
    while (cur && guard++ < 1000 && !onPath[cur]) {
      onPath[cur] = true;
      cur = parentOf[cur];
    }
    var any = hovered !== null;
    Array.prototype.forEach.call(svg.querySelectorAll('.node'), function (g) {
      g.classList.toggle('hl', !!onPath[g.getAttribute('data-node')]);
    });
    Array.prototype.forEach.call(svg.querySelectorAll('.edge'), function (p) {
      var hl = !!onPath[p.getAttribute('data-child')] && parentOf[p.getAttribute('data-child')] === p.getAttribute('data-parent');
      p.classList.toggle('hl', hl);
      p.classList.toggle('dim', any && !hl);
      p.setAttribute('marker-end', 'url(#arrow-' + (hl ? 'hl' : p.getAttribute('data-kind')) + ')');
    });
  }

  selected = initialStream();
  var resizeTimer = 0;
  window.addEventListener('resize', function () {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(render, 150);
  });
  poll();
}());
