// Opens an earmark HTML report in headless Chromium and prints what a reader
// sees, as one JSON object on stdout; the Rust tests and the benchmark decide
// what is right. Nothing is fetched: the page is a local file and any request
// it makes is reported.
//
//   node report-page.mjs check PAGE.html SCREENSHOT.png QUERY
//       totals, the table under each verdict filter, the timelines of the
//       blocked items, a search, a sort, a narrow window; full-page screenshot
//   node report-page.mjs bench PAGE.html QUERY [RUNS]
//       milliseconds to open the page and to filter and search it
//   node report-page.mjs shot PAGE.html OUT.png WIDTH HEIGHT
//       a screenshot of the top WIDTH × HEIGHT pixels of the page, with the
//       first timeline open
//
// Chromium is the system one (EARMARK_CHROMIUM, default /usr/bin/chromium).
import { chromium } from 'playwright-core';
import { pathToFileURL } from 'node:url';
import { resolve } from 'node:path';

const CHROMIUM = process.env.EARMARK_CHROMIUM || '/usr/bin/chromium';
const ARGS = [
  '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];
// Longest wait for any one step.
const STEP_TIMEOUT_MS = 60_000;
// The whole run gives up after this (the browser exits with its pipe).
const RUN_TIMEOUT_MS = 240_000;
const NARROW_WIDTH_PX = 380;

setTimeout(() => {
  console.error('report-page: gave up after ' + RUN_TIMEOUT_MS + ' ms');
  process.exit(3);
}, RUN_TIMEOUT_MS).unref();

const [mode, ...rest] = process.argv.slice(2);

async function open(browser, file, viewport) {
  const context = await browser.newContext({ viewport, reducedMotion: 'reduce' });
  const page = await context.newPage();
  page.setDefaultTimeout(STEP_TIMEOUT_MS);
  const problems = [];
  const requests = [];
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning') problems.push(m.type() + ': ' + m.text());
  });
  page.on('pageerror', (e) => problems.push('uncaught: ' + e.message));
  page.on('request', (r) => {
    const url = r.url();
    if (url !== pageUrl(file)) requests.push(url);
  });
  const started = Date.now();
  await page.goto(pageUrl(file), { waitUntil: 'load' });
  await page.waitForSelector('body[data-items-ready]', { state: 'attached' });
  const openMs = Date.now() - started;
  return { page, problems, requests, openMs };
}

function pageUrl(file) {
  return pathToFileURL(resolve(file)).href;
}

async function shown(page) {
  return page.evaluate(() => ({
    count: Number(document.getElementById('item-count').getAttribute('data-count')),
    status: document.getElementById('item-count').textContent,
    items: Array.from(document.querySelectorAll('#item-rows tr.item .item-name')).map((e) => e.textContent),
  }));
}

async function setVerdict(page, value) {
  await page.selectOption('#f-verdict', value);
}

async function search(page, query) {
  await page.fill('#f-search', query);
  await page.press('#f-search', 'Enter');
}

async function check([file, screenshot, query]) {
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ARGS });
  try {
    const { page, problems, requests } = await open(browser, file, { width: 1280, height: 900 });
    const out = {};
    out.totals = await page.$$eval('[data-total]', (els) =>
      Object.fromEntries(els.map((e) => [e.getAttribute('data-total'), e.textContent.trim()])));
    out.errorKinds = await page.$$eval('[data-error-kind]', (els) =>
      Object.fromEntries(els.map((e) => [e.getAttribute('data-error-kind'), e.textContent.trim()])));
    out.chartLabels = await page.$$eval('#verdict-chart text.bar-label', (els) => els.map((e) => e.textContent));
    out.blockedWorks = await page.$$eval('#blocked-works tbody tr', (trs) =>
      trs.map((tr) => Array.from(tr.cells).map((c) => c.textContent.trim())));
    out.flaggedWorks = await page.$$eval('#flagged-works tbody tr', (trs) =>
      trs.map((tr) => Array.from(tr.cells).map((c) => c.textContent.trim())));
    out.all = await shown(page);
    out.byVerdict = {};
    for (const v of ['block', 'flag', 'allow', 'error']) {
      await setVerdict(page, v);
      out.byVerdict[v] = await shown(page);
    }
    await setVerdict(page, 'block');
    await page.click('#expand-all');
    out.blockedTimelines = await page.$$eval('#item-rows .timeline', (ts) => ts.map((t) => ({
      item: t.getAttribute('data-item'),
      verdict: t.getAttribute('data-verdict'),
      bars: Array.from(t.querySelectorAll('.tl-bar')).map((b) => b.getAttribute('aria-label')),
      segments: Array.from(t.querySelectorAll('.seg')).map((s) => {
        const r = s.getBoundingClientRect();
        return { outcome: s.getAttribute('data-outcome'), label: s.textContent, width: r.width, height: r.height };
      }),
      matches: Array.from(t.querySelectorAll('li.match')).map((li) => ({
        outcome: li.getAttribute('data-outcome'),
        text: li.textContent,
      })),
      reasons: Array.from(t.querySelectorAll('.tl-reasons li')).map((li) => li.textContent),
    })));
    await page.screenshot({ path: screenshot, fullPage: true });
    await page.click('#expand-all');
    await setVerdict(page, '');
    await search(page, query);
    out.search = await shown(page);
    await search(page, '');
    await page.click('button[data-sort="duration"]');
    out.sortedDurations = await page.$$eval('#item-rows tr.item td:nth-child(5)', (tds) => tds.map((td) => td.textContent));
    out.durationSort = await page.getAttribute('th[data-col="duration"]', 'aria-sort');
    await page.setViewportSize({ width: NARROW_WIDTH_PX, height: 800 });
    out.narrow = await page.evaluate(() => ({
      scrollWidth: document.documentElement.scrollWidth,
      clientWidth: document.documentElement.clientWidth,
    }));
    // The same file with JavaScript off: the totals and works stay readable.
    const plain = await browser.newContext({ javaScriptEnabled: false });
    const still = await plain.newPage();
    await still.goto(pageUrl(file), { waitUntil: 'load' });
    out.noScript = {
      totals: await still.$$eval('[data-total]', (els) =>
        Object.fromEntries(els.map((e) => [e.getAttribute('data-total'), e.textContent.trim()]))),
      blockedWorks: await still.$$eval('#blocked-works tbody tr', (trs) => trs.length),
      flaggedWorks: await still.$$eval('#flagged-works tbody tr', (trs) => trs.length),
      itemTableShown: await still.isVisible('#item-table'),
    };
    await plain.close();
    out.pwned = await page.evaluate(() => (window.pwned === undefined ? null : window.pwned));
    out.problems = problems;
    out.requests = requests;
    console.log(JSON.stringify(out));
  } finally {
    await browser.close();
  }
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

async function bench([file, query, runsArg]) {
  const runs = Number(runsArg || 3);
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ARGS });
  const samples = { open_ms: [], ready_in_page_ms: [], filter_block_ms: [], search_ms: [], sort_ms: [], unfilter_ms: [], sort_all_ms: [] };
  let shownAfter = {};
  let problems = [];
  try {
    for (let run = 0; run < runs; run++) {
      const opened = await open(browser, file, { width: 1280, height: 900 });
      const page = opened.page;
      problems = problems.concat(opened.problems, opened.requests.map((r) => 'request: ' + r));
      samples.open_ms.push(opened.openMs);
      samples.ready_in_page_ms.push(Number(await page.getAttribute('body', 'data-items-ready')));
      const timed = async (name, action) => {
        const before = await page.getAttribute('#item-count', 'data-count');
        const renders = await page.getAttribute('#item-count', 'data-renders');
        const t0 = Date.now();
        await action();
        await page.waitForFunction(
          (r) => document.getElementById('item-count').getAttribute('data-renders') !== r, renders);
        samples[name].push(Date.now() - t0);
        shownAfter[name] = { before: Number(before), after: Number(await page.getAttribute('#item-count', 'data-count')) };
      };
      await timed('filter_block_ms', () => setVerdict(page, 'block'));
      await timed('search_ms', () => search(page, query));
      await timed('sort_ms', () => page.click('button[data-sort="item"]'));
      await search(page, '');
      await timed('unfilter_ms', () => setVerdict(page, ''));
      await timed('sort_all_ms', () => page.click('button[data-sort="duration"]'));
      await page.context().close();
    }
  } finally {
    await browser.close();
  }
  const medians = Object.fromEntries(Object.entries(samples).map(([k, v]) => [k, median(v)]));
  console.log(JSON.stringify({ runs, medians, samples, counts: shownAfter, problems }));
}

async function shot([file, out, width, height]) {
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ARGS });
  try {
    const { page, problems } = await open(browser, file, { width: Number(width), height: Number(height) });
    await page.click('#item-rows button.toggle:text-is("Timeline") >> nth=0');
    await page.evaluate(() => window.scrollTo(0, 0));
    await page.screenshot({ path: out, fullPage: true, clip: { x: 0, y: 0, width: Number(width), height: Number(height) } });
    console.log(JSON.stringify({ problems }));
  } finally {
    await browser.close();
  }
}

const modes = { check, bench, shot };
if (!modes[mode]) {
  console.error('usage: report-page.mjs check|bench|shot …');
  process.exit(2);
}
await modes[mode](rest);
