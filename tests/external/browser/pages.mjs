// The sign-in and consent pages in a real headless browser (Debian's chromium), driven
// through the Chrome DevTools protocol with nothing but Node (its experimental WebSocket):
// open /authorize for the demo's web client, sign in, approve, and land on the loopback
// redirect URI with a code. Screenshots of each page go to $SEALKIT_SCREENSHOT_DIR.
//
// Run by scripts/external-client.sh:  node --experimental-websocket pages.mjs
// Needs demo.env in the environment and SEALKIT_SERVER_SPKI (base64 SHA-256 of the
// server's public key: chromium trusts exactly that key, nothing else is relaxed).

import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync, mkdirSync, existsSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const env = (n) => {
  const v = process.env[n];
  if (!v) {
    console.log(`FAIL environment: ${n} is not set`);
    process.exit(1);
  }
  return v;
};
let passed = 0;
const summary = () => `browser (chromium, DevTools protocol): ${passed} passed`;
function check(cond, what, detail = '') {
  if (!cond) {
    console.log(`FAIL ${what}\n  ${detail}`);
    cleanup();
    process.exit(1);
  }
  passed += 1;
  console.log(`ok   ${what}`);
}

const shots = env('SEALKIT_SCREENSHOT_DIR');
mkdirSync(shots, { recursive: true });
const redirectUri = new URL(env('SEALKIT_WEB_REDIRECT_URI'));
const b64u = (b) => Buffer.from(b).toString('base64url');

// The client's side: a loopback callback that records what it got.
let callback;
const callbackServer = createServer((req, res) => {
  const url = new URL(req.url, redirectUri);
  if (url.pathname !== redirectUri.pathname) {
    res.writeHead(404);
    res.end();
    return;
  }
  callback = url;
  res.writeHead(200, { 'content-type': 'text/html' });
  res.end('<!doctype html><title>Callback</title><h1>Demo web console: signed in</h1><p>code received</p>');
});
await new Promise((ok, err) => {
  callbackServer.once('error', err);
  callbackServer.listen(Number(redirectUri.port), redirectUri.hostname, ok);
});

const profile = mkdtempSync(join(tmpdir(), 'sealkit-chromium-'));
const chromium = spawn(
  process.env.CHROMIUM ?? 'chromium',
  [
    '--headless=new',
    '--no-sandbox',
    '--disable-gpu',
    '--no-first-run',
    '--disable-extensions',
    `--user-data-dir=${profile}`,
    '--remote-debugging-port=0',
    `--ignore-certificate-errors-spki-list=${env('SEALKIT_SERVER_SPKI')}`,
    '--window-size=800,700',
    'about:blank',
  ],
  { stdio: ['ignore', 'ignore', 'pipe'] },
);
let stderr = '';
chromium.stderr.on('data', (d) => (stderr += d));
function cleanup() {
  try { chromium.kill('SIGKILL'); } catch {}
  try { callbackServer.close(); } catch {}
  try { rmSync(profile, { recursive: true, force: true }); } catch {}
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
let port;
for (let i = 0; i < 200 && !port; i++) {
  const f = join(profile, 'DevToolsActivePort');
  if (existsSync(f)) port = Number(readFileSync(f, 'utf8').split('\n')[0]);
  else await sleep(100);
}
check(port > 0, 'chromium started with the DevTools protocol', stderr.slice(-2000));
const targets = await (await fetch(`http://127.0.0.1:${port}/json/list`)).json();
const pageTarget = targets.find((t) => t.type === 'page');
const ws = new WebSocket(pageTarget.webSocketDebuggerUrl);
await new Promise((ok) => ws.addEventListener('open', ok, { once: true }));
let nextId = 1;
const pending = new Map();
const waiters = [];
ws.addEventListener('message', (ev) => {
  const msg = JSON.parse(ev.data);
  if (msg.id && pending.has(msg.id)) {
    pending.get(msg.id)(msg);
    pending.delete(msg.id);
  } else if (msg.method) {
    for (const w of waiters.splice(0)) if (!w(msg)) waiters.push(w);
  }
});
const send = (method, params = {}) =>
  new Promise((ok) => {
    const id = nextId++;
    pending.set(id, ok);
    ws.send(JSON.stringify({ id, method, params }));
  });
const loaded = () =>
  new Promise((ok, fail) => {
    const t = setTimeout(() => fail(new Error('no page load within 15 s')), 15000);
    waiters.push((m) => (m.method === 'Page.loadEventFired' ? (clearTimeout(t), ok(), true) : false));
  });
const evaluate = async (expression) => (await send('Runtime.evaluate', { expression, returnByValue: true })).result?.result?.value;
async function screenshot(name) {
  const shot = await send('Page.captureScreenshot', { format: 'png' });
  const file = join(shots, name);
  writeFileSync(file, Buffer.from(shot.result.data, 'base64'));
  console.log(`     screenshot ${file}`);
}

await send('Page.enable');
await send('Runtime.enable');
const verifier = b64u(randomBytes(32));
const state = b64u(randomBytes(16));
const auth = new URL(env('SEALKIT_AUTHORIZE_URL'));
for (const [k, v] of Object.entries({
  response_type: 'code',
  client_id: env('SEALKIT_WEB_CLIENT_ID'),
  redirect_uri: redirectUri.href,
  state,
  code_challenge: b64u(createHash('sha256').update(verifier).digest()),
  code_challenge_method: 'S256',
})) auth.searchParams.set(k, v);

try {
  let load = loaded();
  await send('Page.navigate', { url: auth.href });
  await load;
  check(
    (await evaluate("document.querySelector('input[type=password][name=password]') !== null")) === true,
    'login page: a password form rendered by chromium',
    await evaluate('document.documentElement.outerHTML'),
  );
  await screenshot('1-login.png');
  load = loaded();
  await evaluate(`(() => {
    document.querySelector('input[name=username]').value = ${JSON.stringify(env('SEALKIT_USER'))};
    document.querySelector('input[name=password]').value = ${JSON.stringify(env('SEALKIT_USER_PASSWORD'))};
    document.querySelector('button[type=submit]').click();
  })()`);
  await load;
  check(
    (await evaluate("document.querySelector('button[value=approve]') !== null && document.querySelector('button[value=deny]') !== null")) === true,
    'consent page after sign-in: approve and deny buttons',
    await evaluate('document.body.innerText'),
  );
  await screenshot('2-consent.png');
  load = loaded();
  await evaluate("document.querySelector('button[value=approve]').click()");
  await load;
  const landed = new URL(await evaluate('location.href'));
  await screenshot('3-redirect.png');
  check(
    landed.origin + landed.pathname === redirectUri.origin + redirectUri.pathname,
    `landed on the redirect URI ${redirectUri.href}`,
    landed.href,
  );
  check(
    callback?.searchParams.get('code')?.length > 20 && callback.searchParams.get('state') === state,
    'the redirect carries a code and the state',
    callback?.href,
  );
  check(callback.searchParams.get('iss') === env('SEALKIT_ISSUER'), 'and iss (RFC 9207)', callback?.href);
} catch (err) {
  check(false, 'browser flow', `${err.stack}\n${stderr.slice(-2000)}`);
}
console.log(summary());
ws.close();
cleanup();
process.exit(0);
