// earmark report page: the item table and the timelines.
// Data is read from the JSON element and written with textContent and
// attributes only; nothing from the data is ever parsed as markup.
(function () {
  'use strict';

  var DATA_VERSION = 1;
  var VERDICTS = ['allow', 'flag', 'block', 'error'];
  var VERDICT_LABEL = ['ALLOW', 'FLAG', 'BLOCK', 'ERROR'];
  var VERDICT_WORD = ['allowed', 'flagged for review', 'blocked', 'not screened'];
  // Sort order of verdicts, most severe first.
  var SEVERITY = [3, 1, 0, 2];
  // Item fields (see src/html/data.rs).
  var I_ITEM = 0, I_SOURCE = 1, I_KIND = 2, I_POS = 3, I_DUR = 4, I_SHA = 5,
    I_VERDICT = 6, I_MATCHES = 7, I_REASONS = 8, I_ERROR = 9;
  // Match fields.
  var M_WORK = 0, M_CONSENT = 1, M_RECORD = 2, M_OUTCOME = 3, M_CONFIDENT = 4,
    M_SCORE = 5, M_START = 6, M_END = 7, M_RSTART = 8, M_REND = 9, M_SPEED = 10,
    M_PITCH = 11, M_MEMBER = 12;
  // Work fields.
  var W_ID = 0, W_TITLE = 1, W_HOLDER = 2, W_ISRC = 3;
  var COLUMNS = 7;
  // Delay after the last keystroke before a search runs.
  var SEARCH_DELAY_MS = 120;
  // Lane height of overlapping matches on a timeline (rem).
  var LANE_REM = 1.8;

  var countEl = document.getElementById('item-count');
  var tbody = document.getElementById('item-rows');
  var data;
  try {
    data = JSON.parse(document.getElementById('items-data').textContent);
    if (data.v !== DATA_VERSION) {
      throw new Error('item data version ' + data.v + ', this page reads ' + DATA_VERSION);
    }
  } catch (e) {
    countEl.textContent = 'The item data cannot be read: ' + e.message;
    countEl.hidden = false;
    return;
  }
  var items = data.items, text = data.text, works = data.works;

  var state = { verdict: -1, query: '', sort: 'row', dir: 1, page: 0, pageSize: 100, expandAll: false };
  var open = new Set();
  var view = [];
  // Renders so far (a test or benchmark waits for this to change).
  var renders = 0;
  var searchKeys = null;
  var sortKeys = {};

  function el(tag, cls, content) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (content !== undefined && content !== null) e.textContent = String(content);
    return e;
  }

  // Characters that are invisible or reorder text (controls, zero-width and
  // bidirectional marks) are shown as [U+XXXX], so a name reads as it is.
  var INVISIBLE = /[\u0000-\u001f\u007f-\u009f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]/g;
  function visible(s) {
    return String(s).replace(INVISIBLE, function (c) {
      return '[U+' + c.charCodeAt(0).toString(16).toUpperCase().padStart(4, '0') + ']';
    });
  }

  function clock(s) {
    if (s === null || s === undefined || !isFinite(s)) return '–';
    s = Math.round(Math.max(0, s) * 10) / 10;
    var h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
    var ss = sec.toFixed(1);
    if (sec < 10) ss = '0' + ss;
    return (h > 0 ? h + ':' + (m < 10 ? '0' : '') + m : String(m)) + ':' + ss;
  }

  function count(n) {
    return n.toLocaleString('en-US');
  }

  function workName(w) {
    var work = works[w];
    return visible(work[W_TITLE] ? work[W_TITLE] + ' (' + work[W_ID] + ')' : work[W_ID]);
  }

  function worksText(it) {
    var seen = [], out = [];
    it[I_MATCHES].forEach(function (m) {
      if (seen.indexOf(m[M_WORK]) < 0) {
        seen.push(m[M_WORK]);
        out.push(workName(m[M_WORK]));
      }
    });
    return out.join('; ');
  }

  function buildSearchKeys() {
    searchKeys = new Array(items.length);
    var workKeys = works.map(function (w) {
      return [w[W_ID], w[W_TITLE] || '', w[W_HOLDER] || '', w[W_ISRC] || ''].join('\n').toLowerCase();
    });
    for (var i = 0; i < items.length; i++) {
      var it = items[i], key = it[I_ITEM].toLowerCase();
      var ms = it[I_MATCHES];
      for (var j = 0; j < ms.length; j++) key += '\n' + workKeys[ms[j][M_WORK]];
      searchKeys[i] = key;
    }
  }

  var SORTERS = {
    row: function (i) { return i; },
    verdict: function (i) { return SEVERITY[items[i][I_VERDICT]]; },
    item: function (i) { return items[i][I_ITEM].toLowerCase(); },
    works: function (i) { return worksText(items[i]).toLowerCase(); },
    duration: function (i) { var d = items[i][I_DUR]; return d === null ? Infinity : d; },
    source: function (i) {
      var p = items[i][I_POS];
      return text[items[i][I_SOURCE]].toLowerCase() + '\u0000' + (p === null ? '' : String(1e15 + p));
    }
  };

  function keysFor(col) {
    if (!sortKeys[col]) {
      var f = SORTERS[col], keys = new Array(items.length);
      for (var i = 0; i < items.length; i++) keys[i] = f(i);
      sortKeys[col] = keys;
    }
    return sortKeys[col];
  }

  function recompute() {
    var q = state.query.trim().toLowerCase();
    if (q && !searchKeys) buildSearchKeys();
    var v = state.verdict, out = [];
    for (var i = 0; i < items.length; i++) {
      if (v >= 0 && items[i][I_VERDICT] !== v) continue;
      if (q && searchKeys[i].indexOf(q) < 0) continue;
      out.push(i);
    }
    if (state.sort !== 'row' || state.dir !== 1) {
      var keys = keysFor(state.sort), dir = state.dir;
      out.sort(function (a, b) {
        var ka = keys[a], kb = keys[b];
        if (ka < kb) return -dir;
        if (ka > kb) return dir;
        return a - b;
      });
    }
    view = out;
    var pages = Math.max(1, Math.ceil(view.length / state.pageSize));
    if (state.page >= pages) state.page = pages - 1;
  }

  function badge(code) {
    return el('span', 'badge b-' + VERDICTS[code], VERDICT_LABEL[code]);
  }

  function cell(label, cls, content) {
    var td = el('td', cls, content);
    td.setAttribute('data-label', label);
    return td;
  }

  function itemRow(i) {
    var it = items[i];
    var tr = el('tr', 'item v-' + VERDICTS[it[I_VERDICT]]);
    tr.setAttribute('data-index', String(i));
    tr.appendChild(cell('#', 'num', i + 1));
    var v = cell('Verdict');
    v.appendChild(badge(it[I_VERDICT]));
    tr.appendChild(v);
    var path = cell('Item', 'path');
    path.appendChild(el('span', 'mono item-name', visible(it[I_ITEM])));
    if (it[I_ERROR] !== null) path.appendChild(el('div', 'err', 'Not screened: ' + visible(it[I_ERROR])));
    tr.appendChild(path);
    tr.appendChild(cell('Works', 'works', worksText(it) || '–'));
    tr.appendChild(cell('Duration', 'num', clock(it[I_DUR])));
    var src = visible(text[it[I_SOURCE]]) + (it[I_POS] === null ? '' : ' #' + it[I_POS]) + ' (' + text[it[I_KIND]] + ')';
    tr.appendChild(cell('Source', 'mono small', src));
    var td = cell('Details');
    var b = el('button', 'toggle', it[I_MATCHES].length ? 'Timeline' : 'Details');
    b.type = 'button';
    b.setAttribute('aria-expanded', isOpen(i) ? 'true' : 'false');
    b.setAttribute('aria-controls', 'detail-' + i);
    b.setAttribute('data-index', String(i));
    td.appendChild(b);
    tr.appendChild(td);
    return tr;
  }

  function isOpen(i) {
    return open.has(i) || (state.expandAll && items[i][I_MATCHES].length > 0);
  }

  function detailRow(i) {
    var tr = el('tr', 'detail');
    tr.id = 'detail-' + i;
    var td = el('td');
    td.colSpan = COLUMNS;
    td.appendChild(details(i));
    tr.appendChild(td);
    return tr;
  }

  // Matches of one timeline placed in lanes so overlapping ranges do not hide each other.
  function lanes(ms) {
    var ends = [], lane = [];
    ms.forEach(function (m, j) {
      var k = 0;
      while (k < ends.length && ends[k] > m[M_START]) k++;
      ends[k] = m[M_END];
      lane[j] = k;
    });
    return { lane: lane, count: Math.max(1, ends.length) };
  }

  function pct(x, total) {
    return Math.max(0, Math.min(100, x / total * 100)) + '%';
  }

  function describe(m, n) {
    return 'match ' + n + ' ' + VERDICT_WORD[m[M_OUTCOME]] + ': ' + workName(m[M_WORK]) +
      ' at ' + clock(m[M_START]) + '–' + clock(m[M_END]);
  }

  // The submission bar of one timeline (one per sample member).
  function submissionBar(it, group, member) {
    var length = 0;
    group.forEach(function (g) { length = Math.max(length, g.m[M_END]); });
    var whole = member === null && it[I_DUR] !== null && it[I_DUR] > 0;
    if (whole) length = Math.max(length, it[I_DUR]);
    if (!(length > 0)) length = 1;
    var wrap = el('div', 'tl');
    wrap.appendChild(el('p', 'tl-head', (member === null ? 'Submission' : 'Member ' + visible(text[member])) +
      ', 0:00–' + clock(length) + (whole ? '' : ' (to the end of the last match)')));
    var bar = el('div', 'tl-bar');
    var placed = lanes(group.map(function (g) { return g.m; }));
    bar.style.height = (placed.count * LANE_REM + 0.3) + 'rem';
    bar.setAttribute('role', 'img');
    bar.setAttribute('aria-label', 'Timeline of ' + (member === null ? 'the submission' : 'member ' + visible(text[member])) +
      ', 0:00 to ' + clock(length) + '; ' + group.map(function (g) { return describe(g.m, g.n); }).join('; '));
    group.forEach(function (g, k) {
      var m = g.m;
      var seg = el('div', 'seg o-' + VERDICTS[m[M_OUTCOME]]);
      seg.style.left = pct(m[M_START], length);
      seg.style.width = pct(m[M_END] - m[M_START], length);
      seg.style.top = (placed.lane[k] * LANE_REM + 0.1) + 'rem';
      seg.title = describe(m, g.n);
      seg.setAttribute('data-outcome', VERDICTS[m[M_OUTCOME]]);
      seg.appendChild(el('span', 'seg-label', g.n + ' ' + VERDICT_LABEL[m[M_OUTCOME]]));
      bar.appendChild(seg);
    });
    wrap.appendChild(bar);
    var axis = el('div', 'tl-axis');
    axis.setAttribute('aria-hidden', 'true');
    axis.appendChild(el('span', null, '0:00'));
    axis.appendChild(el('span', null, clock(length / 2)));
    axis.appendChild(el('span', null, clock(length)));
    wrap.appendChild(axis);
    return wrap;
  }

  function matchEntry(m, n) {
    var work = works[m[M_WORK]];
    var li = el('li', 'match m-' + VERDICTS[m[M_OUTCOME]]);
    li.setAttribute('data-outcome', VERDICTS[m[M_OUTCOME]]);
    var head = el('div', 'm-title');
    head.appendChild(badge(m[M_OUTCOME]));
    head.appendChild(document.createTextNode(' ' + n + '. ' + visible(work[W_TITLE] || '(untitled)') + ' '));
    head.appendChild(el('span', 'mono', visible(work[W_ID])));
    li.appendChild(head);
    var who = [];
    if (work[W_HOLDER]) who.push('holder ' + visible(work[W_HOLDER]));
    if (work[W_ISRC]) who.push('ISRC ' + visible(work[W_ISRC]));
    who.push('consent ' + text[m[M_CONSENT]] + (m[M_RECORD] === null ? ' (no record)' : ' (record #' + m[M_RECORD] + ')'));
    li.appendChild(el('p', 'm-line', who.join(' · ')));
    li.appendChild(el('p', 'm-line', 'In the submission ' + clock(m[M_START]) + '–' + clock(m[M_END]) +
      ' (' + (m[M_END] - m[M_START]).toFixed(1) + ' s)' +
      (m[M_MEMBER] === null ? '' : ', member ' + visible(text[m[M_MEMBER]]))));
    var ref = el('p', 'm-line ref', 'In the reference ' + clock(m[M_RSTART]) + '–' + clock(m[M_REND]) +
      ' · speed ×' + m[M_SPEED].toFixed(3) + ' · pitch ×' + m[M_PITCH].toFixed(3) +
      ' · score ' + m[M_SCORE].toFixed(1) + (m[M_CONFIDENT] ? ' (confident)' : ' (not confident)'));
    li.appendChild(ref);
    var refEnd = Math.max(m[M_REND], 1);
    var rbar = el('div', 'ref-bar');
    rbar.setAttribute('role', 'img');
    rbar.setAttribute('aria-label', 'Reference range ' + clock(m[M_RSTART]) + '–' + clock(m[M_REND]) +
      ' on an axis from 0:00 to ' + clock(refEnd));
    var range = el('div', 'ref-range');
    range.style.left = pct(m[M_RSTART], refEnd);
    range.style.width = pct(m[M_REND] - m[M_RSTART], refEnd);
    rbar.appendChild(range);
    li.appendChild(rbar);
    return li;
  }

  function details(i) {
    var it = items[i];
    var box = el('div', 'timeline');
    box.setAttribute('data-item', it[I_ITEM]);
    box.setAttribute('data-verdict', VERDICTS[it[I_VERDICT]]);
    var ms = it[I_MATCHES];
    if (ms.length) {
      var groups = new Map();
      ms.forEach(function (m, j) {
        var key = m[M_MEMBER];
        if (!groups.has(key)) groups.set(key, []);
        groups.get(key).push({ m: m, n: j + 1 });
      });
      groups.forEach(function (group, member) {
        box.appendChild(submissionBar(it, group, member));
      });
      var list = el('ol', 'tl-matches');
      list.setAttribute('aria-label', 'Matches');
      ms.forEach(function (m, j) { list.appendChild(matchEntry(m, j + 1)); });
      box.appendChild(list);
    }
    if (it[I_ERROR] !== null) box.appendChild(el('p', 'err', 'Not screened: ' + visible(it[I_ERROR])));
    if (it[I_REASONS].length) {
      box.appendChild(el('h4', null, 'Reasons'));
      var ul = el('ul', 'tl-reasons');
      it[I_REASONS].forEach(function (r) { ul.appendChild(el('li', null, visible(text[r]))); });
      box.appendChild(ul);
    }
    if (it[I_SHA] !== null) box.appendChild(el('p', 'small mono', 'SHA-256 ' + it[I_SHA]));
    return box;
  }

  function render() {
    var total = view.length;
    var start = state.page * state.pageSize;
    var end = Math.min(total, start + state.pageSize);
    var frag = document.createDocumentFragment();
    for (var k = start; k < end; k++) {
      var i = view[k];
      frag.appendChild(itemRow(i));
      if (isOpen(i)) frag.appendChild(detailRow(i));
    }
    tbody.replaceChildren(frag);
    var filtered = total !== items.length ? ' (filtered from ' + count(items.length) + ')' : '';
    countEl.textContent = total === 0
      ? 'No item matches' + filtered + '.'
      : 'Showing ' + count(start + 1) + '–' + count(end) + ' of ' + count(total) + ' items' + filtered + '.';
    countEl.setAttribute('data-count', String(total));
    renders += 1;
    countEl.setAttribute('data-renders', String(renders));
    var pages = Math.max(1, Math.ceil(total / state.pageSize));
    document.getElementById('item-pager').hidden = pages <= 1;
    document.getElementById('page-info').textContent = 'Page ' + (state.page + 1) + ' of ' + pages;
    document.getElementById('page-prev').disabled = state.page === 0;
    document.getElementById('page-next').disabled = state.page + 1 >= pages;
    document.querySelectorAll('#item-table th[data-col]').forEach(function (th) {
      var col = th.getAttribute('data-col');
      th.setAttribute('aria-sort', col !== state.sort || (col === 'row' && state.dir === 1)
        ? 'none' : (state.dir === 1 ? 'ascending' : 'descending'));
    });
  }

  function update() {
    var t0 = performance.now();
    recompute();
    render();
    document.body.setAttribute('data-last-update-ms', (performance.now() - t0).toFixed(1));
  }

  var verdictSelect = document.getElementById('f-verdict');
  verdictSelect.addEventListener('change', function () {
    state.verdict = VERDICTS.indexOf(verdictSelect.value);
    state.page = 0;
    update();
  });
  var search = document.getElementById('f-search');
  var searchTimer = null;
  function runSearch() {
    clearTimeout(searchTimer);
    if (search.value === state.query) return;
    state.query = search.value;
    state.page = 0;
    update();
  }
  search.addEventListener('input', function () {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(runSearch, SEARCH_DELAY_MS);
  });
  search.addEventListener('change', runSearch);
  search.addEventListener('keydown', function (e) { if (e.key === 'Enter') runSearch(); });
  var pageSize = document.getElementById('f-page-size');
  pageSize.addEventListener('change', function () {
    state.pageSize = parseInt(pageSize.value, 10) || 100;
    state.page = 0;
    update();
  });
  var expand = document.getElementById('expand-all');
  expand.addEventListener('click', function () {
    state.expandAll = !state.expandAll;
    if (!state.expandAll) open.clear();
    expand.setAttribute('aria-pressed', state.expandAll ? 'true' : 'false');
    render();
  });
  document.getElementById('page-prev').addEventListener('click', function () {
    state.page = Math.max(0, state.page - 1);
    render();
  });
  document.getElementById('page-next').addEventListener('click', function () {
    state.page += 1;
    render();
  });
  document.querySelectorAll('#item-table button.sort').forEach(function (b) {
    b.addEventListener('click', function () {
      var col = b.getAttribute('data-sort');
      state.dir = state.sort === col ? -state.dir : 1;
      state.sort = col;
      update();
    });
  });
  tbody.addEventListener('click', function (e) {
    var b = e.target.closest('button.toggle');
    if (!b) return;
    var i = parseInt(b.getAttribute('data-index'), 10);
    var wasOpen = isOpen(i);
    if (wasOpen) {
      open.delete(i);
      if (state.expandAll) {
        state.expandAll = false;
        expand.setAttribute('aria-pressed', 'false');
        view.slice(state.page * state.pageSize, (state.page + 1) * state.pageSize).forEach(function (j) {
          if (j !== i && items[j][I_MATCHES].length) open.add(j);
        });
      }
    } else {
      open.add(i);
    }
    render();
    var again = tbody.querySelector('button.toggle[data-index="' + i + '"]');
    if (again) again.focus();
  });

  document.getElementById('item-controls').hidden = false;
  document.getElementById('item-table-wrap').hidden = false;
  countEl.hidden = false;
  update();
  document.body.setAttribute('data-items-ready', (performance.now()).toFixed(1));
})();
