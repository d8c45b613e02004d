// gantool web export: read model.json, load ONNX Runtime Web, then draw, walk and time the generator.
//
// Query parameters: backend=auto|wasm|webgpu, dtype=fp32|fp16, threads=N (wasm), bench=0 (no timing
// on load), z=URL (a little-endian float32 file of n x latent values: the page runs it and reports the
// output, for parity checks). window.gantool is the harness API (ready, putZ, run, output, measure).
'use strict';
(() => {
  const params = new URLSearchParams(location.search);
  const $ = (id) => document.getElementById(id);
  let resolveReady;
  let rejectReady;
  const api = {
    ready: new Promise((res, rej) => { resolveReady = res; rejectReady = rej; }),
    error: null, info: null, parity: null,
  };
  api.ready.catch(() => {});  // failures are shown on the page; a harness reads api.error
  window.gantool = api;

  class PageError extends Error {
    constructor(title, detail) { super(detail ? `${title}: ${detail}` : title); this.title = title; this.detail = detail; }
  }

  function setStatus(text, kind) {
    const s = $('status');
    s.className = 'status' + (kind ? ` ${kind}` : '');
    s.textContent = text;
  }

  function fail(err) {
    if (api.error) return;
    const title = err instanceof PageError ? err.title : 'Unexpected error';
    const detail = err instanceof PageError ? err.detail : String(err && err.message || err);
    api.error = detail ? `${title}: ${detail}` : title;
    setStatus(title, 'error');
    if (detail) {
      const d = document.createElement('span');
      d.className = 'detail';
      d.textContent = detail;
      $('status').appendChild(d);
    }
    document.querySelectorAll('button, input, select').forEach((e) => { e.disabled = true; });
    document.body.dataset.state = 'error';
    rejectReady(new Error(api.error));
  }
  window.addEventListener('error', (e) => fail(e.error || e.message));
  window.addEventListener('unhandledrejection', (e) => fail(e.reason));

  // ---- numbers: latents, fp16, base64 -------------------------------------------------------
  function randn(n) {
    const out = new Float32Array(n);
    for (let i = 0; i < n; i += 2) {  // Box-Muller: two normals from two uniforms in (0, 1]
      const r = Math.sqrt(-2 * Math.log(1 - Math.random()));
      const a = 2 * Math.PI * Math.random();
      out[i] = r * Math.cos(a);
      if (i + 1 < n) out[i + 1] = r * Math.sin(a);
    }
    return out;
  }

  function slerp(a, b, t) {
    let dot = 0, na = 0, nb = 0;
    for (let i = 0; i < a.length; i++) { dot += a[i] * b[i]; na += a[i] * a[i]; nb += b[i] * b[i]; }
    const omega = Math.acos(Math.min(1, Math.max(-1, dot / Math.sqrt(na * nb))));
    const s = Math.sin(omega);
    const [wa, wb] = s < 1e-6 ? [1 - t, t] : [Math.sin((1 - t) * omega) / s, Math.sin(t * omega) / s];
    return a.map((v, i) => wa * v + wb * b[i]);
  }

  const f32 = new Float32Array(1);
  const u32 = new Uint32Array(f32.buffer);
  function toHalf(x) {  // float32 -> IEEE half bits, round to nearest even
    f32[0] = x;
    const b = u32[0], sign = (b >>> 16) & 0x8000, exp = (b >>> 23) & 0xff, man = b & 0x7fffff;
    if (exp === 0xff) return sign | 0x7c00 | (man ? 0x200 : 0);
    const e = exp - 127 + 15;
    if (e >= 0x1f) return sign | 0x7c00;
    if (e <= 0) {
      if (e < -10) return sign;
      const m = man | 0x800000, shift = 14 - e, half = m >>> shift, rem = m & ((1 << shift) - 1), mid = 1 << (shift - 1);
      return sign | (half + (rem > mid || (rem === mid && (half & 1)) ? 1 : 0));
    }
    const half = (e << 10) | (man >>> 13), rem = man & 0x1fff;
    return sign | (half + (rem > 0x1000 || (rem === 0x1000 && (half & 1)) ? 1 : 0));
  }
  function fromHalf(h) {
    const s = h & 0x8000 ? -1 : 1, e = (h >>> 10) & 0x1f, m = h & 0x3ff;
    if (e === 0) return s * m * 2 ** -24;
    if (e === 0x1f) return m ? NaN : s * Infinity;
    return s * (1 + m / 1024) * 2 ** (e - 15);
  }

  function b64ToBytes(b64) {
    const s = atob(b64);
    const out = new Uint8Array(s.length);
    for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
    return out;
  }
  function bytesToB64(bytes) {
    let s = '';
    for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
    return btoa(s);
  }

  // ---- loading -------------------------------------------------------------------------------
  async function fetchOk(url, what) {
    let r;
    try {
      r = await fetch(url, { cache: 'no-cache' });
    } catch (e) {
      throw new PageError(`Could not download ${what}`, `${url}: ${e.message}`);
    }
    if (!r.ok) throw new PageError(`Could not download ${what}`, `${url}: HTTP ${r.status} ${r.statusText}`);
    return r;
  }

  async function readMeta() {
    const r = await fetchOk('model.json', 'model.json');
    try {
      const meta = await r.json();
      if (meta.format !== 'gantool.web' || !Array.isArray(meta.models)) throw new Error('not a gantool web model.json');
      return meta;
    } catch (e) {
      throw new PageError('model.json is not readable', e.message);
    }
  }

  function loadScript(url) {
    return new Promise((resolve, reject) => {
      const s = document.createElement('script');
      s.src = url;
      s.crossOrigin = 'anonymous';
      s.onload = resolve;
      s.onerror = () => reject(new Error(`${url} did not load`));
      document.head.appendChild(s);
    });
  }

  async function webgpuAdapter() {
    if (!navigator.gpu) return 'this browser has no WebGPU (navigator.gpu is missing)';
    try {
      return (await navigator.gpu.requestAdapter()) ? null : 'no WebGPU adapter (GPU disabled or unsupported)';
    } catch (e) {
      return `WebGPU adapter request failed: ${e.message}`;
    }
  }

  async function loadRuntime(rt, ep) {
    const base = rt.base.endsWith('/') ? rt.base : `${rt.base}/`;
    const file = ep === 'webgpu' ? rt.webgpu_script : rt.wasm_script;
    try {
      await loadScript(base + file);
    } catch (e) {
      const hint = rt.source === 'cdn'
        ? ' (is this device offline, or is the CDN blocked? `gantool export --format web --ort-web DIR` bundles the runtime into the site)'
        : ' (the site is missing its runtime files; export it again)';
      throw new PageError('Could not load ONNX Runtime Web', e.message + hint);
    }
    if (!window.ort || !ort.InferenceSession) throw new PageError('Could not load ONNX Runtime Web', `${base + file} did not define ort`);
    ort.env.wasm.wasmPaths = new URL(base, location.href).href;
    ort.env.logLevel = 'error';
    const threads = parseInt(params.get('threads') || '0', 10);
    if (threads > 0) ort.env.wasm.numThreads = threads;
  }

  async function readModel(entry) {
    const bytes = new Uint8Array(await (await fetchOk(entry.file, entry.file)).arrayBuffer());
    if (entry.bytes && bytes.length !== entry.bytes) {
      throw new PageError(`${entry.file} is corrupt or truncated`, `it has ${bytes.length} bytes; model.json says ${entry.bytes}`);
    }
    if (entry.sha256 && window.crypto && crypto.subtle) {
      const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
      const hex = Array.from(digest, (b) => b.toString(16).padStart(2, '0')).join('');
      if (hex !== entry.sha256) {
        throw new PageError(`${entry.file} is corrupt`, `its SHA-256 is ${hex.slice(0, 16)}..., model.json says ${entry.sha256.slice(0, 16)}...`);
      }
    }
    return bytes;
  }

  async function createSession(bytes, ep, file) {
    try {
      return await ort.InferenceSession.create(bytes, { executionProviders: [ep], graphOptimizationLevel: 'all' });
    } catch (e) {
      throw new PageError(`Could not load the model ${file} on ${ep}`, String(e && e.message || e));
    }
  }

  // ---- running -------------------------------------------------------------------------------
  let meta, session, dtype, latent, latentDims, pixels, lo = -1, hi = 1;

  function tensor(z, n) {  // z: n x latent values, shaped as the generator takes them (its signature)
    if (dtype === 'fp16') return new ort.Tensor('float16', Uint16Array.from(z, toHalf), [n, ...latentDims]);
    return new ort.Tensor('float32', z, [n, ...latentDims]);
  }
  function outputData(t) {
    const d = t.data;
    if (d instanceof Float32Array) return d;
    if (d instanceof Uint16Array) return Float32Array.from(d, fromHalf);
    return Float32Array.from(d);  // Float16Array where the browser has it
  }
  async function runTensor(feeds) {
    const out = await session.run(feeds);
    return out[session.outputNames[0]];
  }
  async function generate(z, n) {
    return outputData(await runTensor({ [session.inputNames[0]]: tensor(z, n) }));
  }

  function draw(canvas, images, n, cols) {
    const pad = 2, size = 28, rows = Math.ceil(n / cols);
    const w = cols * (size + pad) + pad, h = rows * (size + pad) + pad;
    if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
    const ctx = canvas.getContext('2d');
    const img = ctx.createImageData(w, h);
    for (let k = 0; k < img.data.length; k += 4) img.data[k + 3] = 255;
    for (let i = 0; i < n; i++) {
      const ox = pad + (i % cols) * (size + pad), oy = pad + Math.floor(i / cols) * (size + pad);
      for (let y = 0; y < size; y++) {
        for (let x = 0; x < size; x++) {
          const v = images[i * pixels + y * size + x];
          const g = Math.max(0, Math.min(255, Math.round(((v - lo) / (hi - lo)) * 255)));
          const p = ((oy + y) * w + ox + x) * 4;
          img.data[p] = img.data[p + 1] = img.data[p + 2] = g;
        }
      }
    }
    ctx.putImageData(img, 0, 0);
  }

  async function showGrid(z, note) {
    const images = await generate(z, 64);
    draw($('grid'), images, 64, 8);
    $('grid-note').textContent = note;
  }

  let fixedZ = null;
  const walk = { a: null, b: null, pending: false, running: false };
  async function walkStrip() {
    const steps = 10, z = new Float32Array(steps * latent);
    for (let i = 0; i < steps; i++) z.set(slerp(walk.a, walk.b, i / (steps - 1)), i * latent);
    draw($('walk-strip'), await generate(z, steps), steps, steps);
  }
  async function walkFrame() {
    if (walk.running) { walk.pending = true; return; }
    walk.running = true;
    try {
      do {
        walk.pending = false;
        const t = $('walk-t').value / 1000;
        const images = await generate(slerp(walk.a, walk.b, t), 1);
        const big = $('walk-big');
        draw(big, images, 1, 1);
        big.dataset.t = String(t);
      } while (walk.pending);
    } finally {
      walk.running = false;
    }
  }

  async function measure(batch, opts = {}) {
    const warmup = opts.warmup ?? 5, minRepeats = opts.minRepeats ?? 10, minTime = (opts.minTime ?? 0.5) * 1000;
    const feeds = [0, 1].map(() => ({ [session.inputNames[0]]: tensor(randn(batch * latent), batch) }));
    let t = performance.now();
    await runTensor(feeds[0]);
    const first = performance.now() - t;
    for (let i = 0; i < warmup; i++) await runTensor(feeds[i % 2]);
    const times = [];
    const start = performance.now();
    while (times.length < 100000 && (times.length < minRepeats || performance.now() - start < minTime)) {
      t = performance.now();
      await runTensor(feeds[times.length % 2]);
      times.push(performance.now() - t);
    }
    const sorted = [...times].sort((x, y) => x - y);
    const q = (p) => sorted[Math.min(sorted.length - 1, Math.floor(p * (sorted.length - 1) + 0.5))];
    const median = sorted.length % 2 ? sorted[(sorted.length - 1) / 2]
      : (sorted[sorted.length / 2 - 1] + sorted[sorted.length / 2]) / 2;
    return { batch, first_ms: first, warmup, repeats: times.length, median_ms: median, p90_ms: q(0.9),
             min_ms: sorted[0], samples_per_s: batch / (median / 1000), times_ms: times };
  }

  async function showMeasure() {
    const batch = parseInt($('bench-batch').value, 10);
    $('btn-measure').disabled = true;
    $('timing').textContent = `measuring batch ${batch}\u2026`;
    try {
      const r = await measure(batch);
      const fmt = (v) => v.toLocaleString('en-US', { maximumFractionDigits: v < 10 ? 2 : 1 });
      $('timing').textContent = `batch ${batch}: median ${fmt(r.median_ms)} ms per batch, `
        + `${Math.round(r.samples_per_s).toLocaleString('en-US')} samples/s `
        + `(p90 ${fmt(r.p90_ms)} ms, ${r.repeats} timed runs after ${r.warmup} warm-up; first call ${fmt(r.first_ms)} ms)`;
      $('timing').dataset.samplesPerS = String(r.samples_per_s);
    } finally {
      $('btn-measure').disabled = false;
    }
  }

  function fact(dt, dd) {
    const a = document.createElement('dt'); a.textContent = dt;
    const b = document.createElement('dd'); b.textContent = dd;
    $('facts').append(a, b);
  }

  // ---- the harness API: prepared inputs stay in the page, so a timed run moves no data --------
  const inputs = new Map();
  let nextId = 1;
  api.putZ = (b64, n) => {
    const z = new Float32Array(b64ToBytes(b64).buffer);
    if (z.length !== n * latent) throw new Error(`z has ${z.length} values, expected ${n} x ${latent}`);
    const id = nextId++;
    inputs.set(id, { feeds: { [session.inputNames[0]]: tensor(z, n) }, out: null });
    return id;
  };
  api.run = async (id) => {  // -> milliseconds of this one session.run
    const slot = inputs.get(id);
    const t = performance.now();
    slot.out = await runTensor(slot.feeds);
    return performance.now() - t;
  };
  api.output = (id) => bytesToB64(new Uint8Array(outputData(inputs.get(id).out).buffer));
  api.free = (id) => { inputs.delete(id); };
  api.measure = (batch, opts) => measure(batch, opts).then((r) => { delete r.times_ms; return r; });

  async function parityInput(url) {
    const buf = await (await fetchOk(url, 'the parity input')).arrayBuffer();
    if (buf.byteLength === 0 || buf.byteLength % (4 * latent)) {
      throw new PageError('The parity input is not n x latent float32 values', `${url}: ${buf.byteLength} bytes, latent ${latent}`);
    }
    const n = buf.byteLength / (4 * latent);
    const t = performance.now();
    const out = await generate(new Float32Array(buf), n);
    const ms = performance.now() - t;
    let mn = Infinity, mx = -Infinity, sum = 0;
    for (const v of out) { mn = Math.min(mn, v); mx = Math.max(mx, v); sum += v; }
    api.parity = { n, shape: [n, ...meta.img_shape], output: out, ms };
    api.parityOutput = () => bytesToB64(new Uint8Array(out.buffer));
    $('parity').hidden = false;
    $('parity-out').textContent = `${n} z's from ${url} -> images (${api.parity.shape.join(', ')}) on ${api.info.backend} ${dtype}\n`
      + `min ${mn.toFixed(6)}  max ${mx.toFixed(6)}  mean ${(sum / out.length).toFixed(6)}  (${ms.toFixed(1)} ms)`;
    draw($('grid'), out, Math.min(n, 64), 8);
    $('grid-note').textContent = `the first ${Math.min(n, 64)} images of the parity input`;
    document.body.dataset.parity = 'done';
  }

  // ---- start -----------------------------------------------------------------------------------
  async function main() {
    if (location.protocol === 'file:') {
      throw new PageError('Open this page through a web server, not as a file',
        'browsers do not let a page read its model from file://. In this folder run: python3 -m http.server 8000 --bind 127.0.0.1, then open http://127.0.0.1:8000/');
    }
    meta = await readMeta();
    latent = meta.latent_dim;
    latentDims = meta.input_shape ? meta.input_shape.slice(1) : [latent];
    pixels = meta.img_shape.reduce((x, y) => x * y, 1);
    [lo, hi] = meta.value_range;
    dtype = params.get('dtype') || 'fp32';
    const entry = meta.models.find((m) => m.dtype === dtype);
    if (!entry) throw new PageError(`No ${dtype} model in this site`, `model.json lists: ${meta.models.map((m) => m.dtype).join(', ')}`);

    const want = params.get('backend') || 'auto';
    if (!['auto', 'wasm', 'webgpu'].includes(want)) throw new PageError(`Unknown backend ${want}`, 'use auto, wasm or webgpu');
    const noGpu = want === 'wasm' ? 'wasm was asked for' : await webgpuAdapter();
    if (want === 'webgpu' && noGpu) throw new PageError('WebGPU is not available', noGpu);
    let ep = noGpu ? 'wasm' : 'webgpu';
    setStatus(`Loading ONNX Runtime Web (${ep})\u2026`);
    await loadRuntime(meta.ort_web, ep);
    setStatus(`Loading ${entry.file} (${(entry.bytes / 1e6).toFixed(1)} MB)\u2026`);
    const bytes = await readModel(entry);
    let fallback = noGpu && want === 'auto' ? `webgpu: ${noGpu}` : '';
    try {
      session = await createSession(bytes, ep, entry.file);
    } catch (e) {
      if (ep !== 'webgpu' || want !== 'auto') throw e;
      fallback = `webgpu failed (${e.detail}); using wasm`;  // shown on the page, never silent
      ep = 'wasm';
      session = await createSession(bytes, ep, entry.file);
    }
    const threads = ep === 'wasm' ? (self.crossOriginIsolated ? ort.env.wasm.numThreads || 1 : 1) : null;
    api.info = {
      backend: ep, dtype, threads, fallback, ort_web: (ort.env.versions && ort.env.versions.web) || meta.ort_web.version,
      runtime_source: meta.ort_web.source, user_agent: navigator.userAgent, cross_origin_isolated: !!self.crossOriginIsolated,
      latent_dim: latent, img_shape: meta.img_shape,
    };
    fact('backend', ep + (threads ? ` (${threads} thread${threads > 1 ? 's' : ''}${self.crossOriginIsolated ? '' : ', page not cross-origin isolated'})` : ''));
    if (fallback) fact('note', fallback);
    fact('model', `${entry.file}, ${dtype}, ${latent}-d z -> ${meta.img_shape.join('x')}`);
    fact('runtime', `onnxruntime-web ${api.info.ort_web} (${meta.ort_web.source === 'cdn' ? 'CDN' : 'bundled'})`);
    $('footer').textContent = `Generator exported by gantool ${meta.gantool_version || ''} from checkpoint sha256 ${meta.source_sha256}; fixed noise: seed ${meta.seed}.`;

    fixedZ = new Float32Array(await (await fetchOk(meta.fixed_z.file, 'the fixed noise')).arrayBuffer());
    await showGrid(fixedZ.subarray(0, 64 * latent), `fixed noise: seed ${meta.seed}, the same z as \`gantool sample --seed ${meta.seed}\``);
    walk.a = fixedZ.slice(0, latent);
    walk.b = fixedZ.slice(latent, 2 * latent);
    await walkStrip();
    await walkFrame();

    $('btn-new').onclick = () => showGrid(randn(64 * latent), 'new noise (random)').catch(fail);
    $('btn-fixed').onclick = () => showGrid(fixedZ.subarray(0, 64 * latent), `fixed noise: seed ${meta.seed}`).catch(fail);
    $('btn-ends').onclick = () => { walk.a = randn(latent); walk.b = randn(latent); walkStrip().then(walkFrame).catch(fail); };
    $('walk-t').oninput = () => walkFrame().catch(fail);
    $('btn-measure').onclick = () => showMeasure().catch(fail);
    document.querySelectorAll('button, input, select').forEach((e) => { e.disabled = false; });

    setStatus(`Ready: generating on ${ep}${fallback ? ` (${fallback})` : ''}.`, 'ok');
    document.body.dataset.state = 'ready';
    const z = params.get('z');
    if (z) await parityInput(z);
    resolveReady(api.info);
    if (params.get('bench') !== '0' && !z) await showMeasure();
  }

  main().catch(fail);
})();
