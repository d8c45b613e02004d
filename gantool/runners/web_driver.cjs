// gantool's browser driver: JSON lines on stdin -> playwright-core on the system Chromium -> JSON lines on stdout.
// Started by gantool.runners.browser with NODE_PATH pointing at the web cache's node_modules.
'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');
const readline = require('readline');

const emit = (obj) => process.stdout.write(`${JSON.stringify(obj)}\n`);
let chromium;
try {
  ({ chromium } = require('playwright-core'));
} catch (e) {
  emit({ id: 0, error: `playwright-core is not installed (${e.message.split('\n')[0]})` });
  process.exit(3);
}

// The flags gantool runs Chromium with; playwright adds --headless (headless: true) and the
// fresh --user-data-dir (launchPersistentContext), which it refuses to take in args.
const FLAGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync'];
let ctx = null;
let userDir = null;
const pages = new Map();
let nextPage = 1;

function page(id) {
  const p = pages.get(id);
  if (!p) throw new Error(`no page ${id}`);
  return p;
}

async function quit() {
  if (ctx) await ctx.close().catch(() => {});
  ctx = null;
  if (userDir) fs.rmSync(userDir, { recursive: true, force: true });
  userDir = null;
}

const ops = {
  async launch({ executable, timeout_ms: timeout }) {
    userDir = fs.mkdtempSync(path.join(os.tmpdir(), 'gantool-chromium-'));
    ctx = await chromium.launchPersistentContext(userDir, {
      executablePath: executable, headless: true, args: FLAGS, timeout, viewport: { width: 1280, height: 900 },
    });
    return { version: ctx.browser() ? ctx.browser().version() : null, flags: ['--headless', ...FLAGS, '--user-data-dir=<fresh>'] };
  },
  async open({ url, width, height, timeout_ms: timeout }) {
    const p = await ctx.newPage();
    p.gantoolLog = [];
    p.on('console', (m) => { if (m.type() === 'error' || m.type() === 'warning') p.gantoolLog.push(`${m.type()}: ${m.text()}`); });
    p.on('pageerror', (e) => p.gantoolLog.push(`pageerror: ${e.message}`));
    if (width && height) await p.setViewportSize({ width, height });
    await p.goto(url, { waitUntil: 'load', timeout });
    const id = nextPage++;
    pages.set(id, p);
    return { page: id };
  },
  async eval({ page: id, fn, arg }) {
    // fn is a function's source text; it runs in the page with arg and may return a promise.
    return { value: await page(id).evaluate(({ src, a }) => (0, eval)(`(${src})`)(a), { src: fn, a: arg ?? null }) };
  },
  async wait({ page: id, expr, timeout_ms: timeout }) {
    await page(id).waitForFunction(expr, null, { timeout });
    return {};
  },
  async viewport({ page: id, width, height }) {
    await page(id).setViewportSize({ width, height });
    return {};
  },
  async screenshot({ page: id, path: file, full_page: fullPage }) {
    await page(id).screenshot({ path: file, fullPage: !!fullPage });
    return { path: file };
  },
  async log({ page: id }) {
    return { log: page(id).gantoolLog };
  },
  async close({ page: id }) {
    await page(id).close();
    pages.delete(id);
    return {};
  },
  async quit() {
    await quit();
    return {};
  },
};

const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
let queue = Promise.resolve();
rl.on('line', (line) => {
  queue = queue.then(async () => {
    let msg;
    try {
      msg = JSON.parse(line);
      const op = ops[msg.op];
      if (!op) throw new Error(`unknown op ${msg.op}`);
      emit({ id: msg.id, ...(await op(msg)) });
      if (msg.op === 'quit') process.exit(0);
    } catch (e) {
      emit({ id: msg ? msg.id : 0, error: String(e && e.message || e).split('\n')[0] });
    }
  });
});
rl.on('close', () => { queue.then(quit).then(() => process.exit(0)); });
