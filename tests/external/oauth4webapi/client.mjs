// External-client interop check: drives a running `sealkit demo` with
// oauth4webapi, an RFC 9449 DPoP client that nobody on this project wrote.
//
// Run through scripts/external-client.sh, or by hand against a running demo:
//   set -a; . DEMO_DIR/demo.env; set +a
//   NODE_EXTRA_CA_CERTS="$SEALKIT_CA_FILE" node client.mjs
//
// Prints one line per check and a closing "N passed, M failed" line; exits
// non-zero as soon as a check fails (after printing what the server sent).

import { readFileSync } from 'node:fs';
import { webcrypto as nodeCrypto } from 'node:crypto';
import * as oauth from 'oauth4webapi';

const crypto = globalThis.crypto ?? nodeCrypto;
const VERSION = JSON.parse(
  readFileSync(new URL('./node_modules/oauth4webapi/package.json', import.meta.url), 'utf8'),
).version;

let passed = 0;
let failed = 0;

// ---------------------------------------------------------------- reporting

function summary() {
  return `external client (oauth4webapi ${VERSION}): ${passed} passed, ${failed} failed`;
}

function pass(what) {
  passed += 1;
  console.log(`ok   ${what}`);
}

function fail(what, detail) {
  failed += 1;
  console.log(`FAIL ${what}`);
  if (detail !== undefined) console.log(indent(detail));
  if (lastExchange) console.log(indent(`last HTTP exchange:\n${formatExchange(lastExchange)}`));
  console.log(summary());
  process.exit(1);
}

function check(cond, what, detail) {
  if (cond) pass(what);
  else fail(what, typeof detail === 'function' ? detail() : detail);
}

function indent(text) {
  return String(text)
    .split('\n')
    .map((l) => `     ${l}`)
    .join('\n');
}

function env(name) {
  const v = process.env[name];
  if (!v) {
    console.log(`FAIL environment: ${name} is not set (source the demo's demo.env)`);
    console.log(summary());
    process.exit(2);
  }
  return v;
}

// ------------------------------------------------ HTTP recording (diagnostics)

// Every request oauth4webapi makes goes through this fetch, so a failed check
// can show the exact request and response the server saw/sent.
let lastExchange;

async function recordingFetch(url, init = {}) {
  const reqHeaders = new Headers(init.headers);
  const response = await fetch(url, init);
  const body = await response.clone().text();
  lastExchange = {
    method: init.method ?? 'GET',
    url: String(url),
    requestHeaders: Object.fromEntries(reqHeaders),
    requestBody: init.body === undefined ? undefined : String(init.body),
    status: response.status,
    responseHeaders: Object.fromEntries(response.headers),
    responseBody: body,
  };
  return response;
}

function redact(headers) {
  const out = { ...headers };
  if (out.authorization) out.authorization = out.authorization.replace(/ .*/, ' <redacted>');
  return out;
}

function formatExchange(x) {
  return [
    `> ${x.method} ${x.url}`,
    `> headers ${JSON.stringify(redact(x.requestHeaders))}`,
    x.requestBody !== undefined ? `> body ${x.requestBody}` : undefined,
    `< ${x.status}`,
    `< headers ${JSON.stringify(x.responseHeaders)}`,
    `< body ${x.responseBody}`,
  ]
    .filter(Boolean)
    .join('\n');
}

// ------------------------------------------------------------------ helpers

const b64u = (bytes) => Buffer.from(bytes).toString('base64url');

// RFC 7638 JWK thumbprint (SHA-256), computed here rather than taken from the
// library so the check does not trust the client's own arithmetic.
async function jwkThumbprint(publicKey) {
  const jwk = await crypto.subtle.exportKey('jwk', publicKey);
  let members;
  switch (jwk.kty) {
    case 'EC':
      members = { crv: jwk.crv, kty: jwk.kty, x: jwk.x, y: jwk.y };
      break;
    case 'OKP':
      members = { crv: jwk.crv, kty: jwk.kty, x: jwk.x };
      break;
    default:
      throw new Error(`unexpected kty ${jwk.kty}`);
  }
  // Members are already in lexicographic order; JSON.stringify keeps insertion order.
  const digest = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(JSON.stringify(members)));
  return b64u(new Uint8Array(digest));
}

function jwtPart(jwt, index) {
  const parts = String(jwt).split('.');
  if (parts.length !== 3) throw new Error(`not a compact JWS (${parts.length} parts)`);
  return JSON.parse(Buffer.from(parts[index], 'base64url').toString('utf8'));
}

function describeError(err) {
  if (err instanceof oauth.ResponseBodyError) {
    return `${err.name}: HTTP ${err.status} error=${err.error} error_description=${err.error_description}`;
  }
  if (err instanceof oauth.WWWAuthenticateChallengeError) {
    return `${err.name}: HTTP ${err.response?.status} WWW-Authenticate ${JSON.stringify(err.cause)}`;
  }
  return err?.stack ?? String(err);
}

async function generateKeyPair(kind) {
  if (kind === 'ES256') {
    return crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign', 'verify']);
  }
  return crypto.subtle.generateKey({ name: 'Ed25519' }, false, ['sign', 'verify']);
}

// ---------------------------------------------------------------- settings

const issuer = new URL(env('SEALKIT_ISSUER'));
const tokenUrl = env('SEALKIT_TOKEN_URL');
const nonceClient = { id: env('SEALKIT_NONCE_CLIENT_ID'), secret: env('SEALKIT_NONCE_CLIENT_SECRET') };
const dpopClient = { id: env('SEALKIT_DPOP_CLIENT_ID'), secret: env('SEALKIT_DPOP_CLIENT_SECRET') };
const bearerClient = { id: env('SEALKIT_BEARER_CLIENT_ID'), secret: env('SEALKIT_BEARER_CLIENT_SECRET') };
const introspectUrl = env('SEALKIT_INTROSPECT_URL');
const introspector = { id: env('SEALKIT_INTROSPECT_CLIENT_ID'), secret: env('SEALKIT_INTROSPECT_CLIENT_SECRET') };

const http = { [oauth.customFetch]: recordingFetch };

// ---------------------------------------------------------------- (a) discovery

let as;
try {
  const res = await oauth.discoveryRequest(issuer, { algorithm: 'oauth2', ...http });
  as = await oauth.processDiscoveryResponse(issuer, res);
} catch (err) {
  fail(`discovery at ${issuer.origin}/.well-known/oauth-authorization-server`, describeError(err));
}
check(
  as.issuer === issuer.href.replace(/\/$/, '') || as.issuer === issuer.href,
  `discovery: issuer ${as.issuer} (oauth4webapi validated the metadata)`,
);
check(
  as.token_endpoint === tokenUrl,
  `discovery: token_endpoint ${as.token_endpoint}`,
  `expected SEALKIT_TOKEN_URL=${tokenUrl}`,
);
check(
  Array.isArray(as.dpop_signing_alg_values_supported) && as.dpop_signing_alg_values_supported.includes('ES256'),
  `discovery: dpop_signing_alg_values_supported ${JSON.stringify(as.dpop_signing_alg_values_supported)}`,
  'ES256 must be advertised',
);

// ---------------------------------------------------------------- token helpers

async function requestToken(client, dpop) {
  const c = { client_id: client.id };
  const res = await oauth.clientCredentialsGrantRequest(
    as,
    c,
    oauth.ClientSecretBasic(client.secret),
    { scope: 'read' },
    { ...http, ...(dpop ? { DPoP: dpop } : {}) },
  );
  const nonceHeader = res.headers.get('dpop-nonce');
  const rawTokenType = await res
    .clone()
    .json()
    .then((b) => b?.token_type)
    .catch(() => undefined);
  const result = await oauth.processClientCredentialsResponse(as, c, res);
  return { result, nonceHeader, rawTokenType };
}

async function checkDPoPToken(label, tokens, rawTokenType, keyPair) {
  check(
    String(tokens.token_type).toLowerCase() === 'dpop',
    `${label}: token_type ${rawTokenType}`,
    `expected DPoP, got ${rawTokenType}`,
  );
  const jkt = await jwkThumbprint(keyPair.publicKey);
  let payload;
  try {
    payload = jwtPart(tokens.access_token, 1);
  } catch (err) {
    fail(`${label}: access token is a JWT`, describeError(err));
  }
  check(
    payload?.cnf?.jkt === jkt,
    `${label}: access token cnf.jkt = RFC 7638 thumbprint ${jkt}`,
    `token payload cnf=${JSON.stringify(payload?.cnf)}`,
  );
  return jkt;
}

// ------------------------------------------- (b) nonce tenant, ES256, nonce round-trip

const esKeys = await generateKeyPair('ES256');
const esDPoP = oauth.DPoP({}, esKeys);
let nonceTokens;
{
  const label = 'nonce tenant (ES256)';
  let challenged = false;
  try {
    await requestToken(nonceClient, esDPoP);
  } catch (err) {
    if (!oauth.isDPoPNonceError(err)) fail(`${label}: first attempt`, `expected use_dpop_nonce, got ${describeError(err)}`);
    challenged = true;
  }
  check(challenged, `${label}: nonce challenge received`, 'first attempt without a nonce succeeded; nonces not enforced');
  check(
    Boolean(lastExchange?.responseHeaders?.['dpop-nonce']) && lastExchange.status === 400,
    `${label}: challenge is HTTP 400 with a DPoP-Nonce header`,
  );

  let retry;
  try {
    retry = await requestToken(nonceClient, esDPoP);
  } catch (err) {
    fail(`${label}: retry with the server's nonce succeeds`, describeError(err));
  }
  const sentProof = lastExchange.requestHeaders.dpop;
  check(
    sentProof && typeof jwtPart(sentProof, 1).nonce === 'string',
    `${label}: retry with the server's nonce succeeds`,
  );
  await checkDPoPToken(label, retry.result, retry.rawTokenType, esKeys);
  nonceTokens = { tokens: retry.result, keys: esKeys };

  check(Boolean(retry.nonceHeader), `${label}: success response carries a DPoP-Nonce header`);
  // A real client keeps using the most recent nonce; the next request must go
  // through without another challenge.
  let again;
  try {
    again = await requestToken(nonceClient, esDPoP);
  } catch (err) {
    fail(`${label}: next request with the cached nonce succeeds without a new challenge`, describeError(err));
  }
  check(
    jwtPart(lastExchange.requestHeaders.dpop, 1).nonce === retry.nonceHeader,
    `${label}: next request with the cached nonce succeeds without a new challenge`,
  );
  await checkDPoPToken(`${label} second token`, again.result, again.rawTokenType, esKeys);
}

// ------------------------------------------ (c) DPoP tenant (no nonce), EdDSA if possible

let dpopTokens;
{
  let keys;
  let alg;
  try {
    keys = await generateKeyPair('Ed25519');
    alg = 'Ed25519';
  } catch (err) {
    console.log(`note: WebCrypto Ed25519 unavailable (${err.message}); using ES256`);
    keys = await generateKeyPair('ES256');
    alg = 'ES256';
  }
  // oauth4webapi 3.x names an Ed25519 key's proof alg "Ed25519" (RFC 9864's
  // fully-specified name). If the server advertises only the polymorphic
  // "EdDSA", use that name in the header: same key, same signature.
  const advertised = as.dpop_signing_alg_values_supported ?? [];
  let options;
  let headerAlg = alg;
  if (alg === 'Ed25519' && !advertised.includes('Ed25519') && advertised.includes('EdDSA')) {
    headerAlg = 'EdDSA';
    options = {
      [oauth.modifyAssertion]: (header) => {
        header.alg = 'EdDSA';
      },
    };
  }
  const label = `dpop tenant (${headerAlg === alg ? alg : `${alg} key, alg ${headerAlg}`})`;
  const dpop = oauth.DPoP({}, keys, options);
  let res;
  try {
    res = await requestToken(dpopClient, dpop);
  } catch (err) {
    fail(`${label}: token without a nonce`, describeError(err));
  }
  check(
    jwtPart(lastExchange.requestHeaders.dpop, 0).alg === headerAlg,
    `${label}: token issued on the first attempt (no nonce required)`,
  );
  await checkDPoPToken(label, res.result, res.rawTokenType, keys);
  dpopTokens = { tokens: res.result, keys };

  // The same tenant must refuse a request that carries no proof at all.
  let refused;
  try {
    await requestToken(dpopClient, undefined);
  } catch (err) {
    refused = err;
  }
  check(
    refused instanceof oauth.ResponseBodyError && refused.status === 400,
    `dpop tenant: request without a DPoP proof refused (${refused instanceof oauth.ResponseBodyError ? `${refused.status} ${refused.error}` : 'not refused'})`,
    () => (refused ? describeError(refused) : 'a token was issued without a proof'),
  );
}

// ---------------------------------------------------------------- bearer tenant

let bearerTokens;
{
  const label = 'bearer tenant';
  let res;
  try {
    res = await requestToken(bearerClient, undefined);
  } catch (err) {
    fail(`${label}: token without DPoP`, describeError(err));
  }
  check(
    String(res.result.token_type).toLowerCase() === 'bearer',
    `${label}: token_type ${res.rawTokenType}`,
    `expected Bearer, got ${res.rawTokenType}`,
  );
  const payload = jwtPart(res.result.access_token, 1);
  check(payload.cnf === undefined, `${label}: access token has no cnf`, `cnf=${JSON.stringify(payload.cnf)}`);
  bearerTokens = res.result;
}

// ---------------------------------------------------------------- (d) introspection

async function introspect(token) {
  const auth = Buffer.from(
    `${encodeURIComponent(introspector.id)}:${encodeURIComponent(introspector.secret)}`,
  ).toString('base64');
  const res = await recordingFetch(introspectUrl, {
    method: 'POST',
    headers: {
      authorization: `Basic ${auth}`,
      'content-type': 'application/x-www-form-urlencoded',
      accept: 'application/json',
    },
    body: new URLSearchParams({ token }).toString(),
  });
  let body;
  try {
    body = JSON.parse(lastExchange.responseBody);
  } catch {
    body = undefined;
  }
  return { status: res.status, body };
}

for (const [label, entry] of [
  ['introspection of nonce-tenant token', nonceTokens],
  ['introspection of dpop-tenant token', dpopTokens],
]) {
  const jkt = await jwkThumbprint(entry.keys.publicKey);
  const { status, body } = await introspect(entry.tokens.access_token);
  check(status === 200 && body?.active === true, `${label}: active`, `HTTP ${status} ${JSON.stringify(body)}`);
  check(body.token_type === 'DPoP', `${label}: token_type "DPoP"`, `token_type=${JSON.stringify(body.token_type)}`);
  check(body.cnf?.jkt === jkt, `${label}: cnf.jkt matches the key thumbprint`, `cnf=${JSON.stringify(body.cnf)}, expected jkt ${jkt}`);
}
{
  const label = 'introspection of bearer token';
  const { status, body } = await introspect(bearerTokens.access_token);
  check(status === 200 && body?.active === true, `${label}: active`, `HTTP ${status} ${JSON.stringify(body)}`);
  check(
    String(body.token_type).toLowerCase() === 'bearer' && body.cnf === undefined,
    `${label}: token_type ${body.token_type}, no cnf`,
    `token_type=${JSON.stringify(body.token_type)} cnf=${JSON.stringify(body.cnf)}`,
  );
}
{
  const { status, body } = await introspect('not-a-token');
  check(
    status === 200 && body?.active === false,
    'introspection of garbage: active false',
    `HTTP ${status} ${JSON.stringify(body)}`,
  );
}

// ------------------------------------- resources behind `sealkit guard` (RFC 9449 §7)

// oauth4webapi makes the resource request itself: DPoP scheme, a proof with ath, htm and
// htu of this request, and a retry with the nonce when the guard asks for one.
async function resourceRequest(url, token, dpop) {
  const call = () =>
    oauth.protectedResourceRequest(token, 'GET', new URL(url), undefined, undefined, { ...http, DPoP: dpop });
  try {
    return { response: await call(), retried: false };
  } catch (err) {
    if (oauth.isDPoPNonceError(err)) return { response: await call(), retried: true };
    throw err;
  }
}

if (process.env.SEALKIT_RESOURCE_URL) {
  for (const [label, url, expectNonce] of [
    ['resource via guard', process.env.SEALKIT_RESOURCE_URL, false],
    ['nonce resource via guard', env('SEALKIT_RESOURCE_NONCE_URL'), true],
  ]) {
    const dpop = oauth.DPoP({}, dpopTokens.keys);
    let result;
    try {
      result = await resourceRequest(url, dpopTokens.tokens.access_token, dpop);
    } catch (err) {
      fail(`${label}: 200`, describeError(err));
    }
    const { response, retried } = result;
    const body = await response.json().catch(() => ({}));
    check(response.status === 200, `${label}: 200`, `HTTP ${response.status} ${JSON.stringify(body)}`);
    check(
      retried === expectNonce,
      `${label}: ${expectNonce ? 'nonce challenge answered' : 'no nonce challenge'}`,
      `retried=${retried}`,
    );
    check(
      body.headers?.['x-sealkit-token-type'] === 'DPoP' && body.headers?.authorization === undefined,
      `${label}: upstream sees the identity, not the credentials`,
      JSON.stringify(body.headers),
    );
  }
}

// ------------------------- (e) people: authorization code + PKCE + DPoP + refresh (issue 20)
//
// oauth4webapi builds the authorization request, validates the callback (state, iss), makes the
// code exchange with PKCE and a DPoP proof, and the refreshes. The person is scripted: the
// login and consent pages are plain HTML forms, filled here with fetch.

function formField(html, name) {
  const m = html.match(new RegExp(`name="${name}" value="([^"]*)"`));
  return m ? m[1] : undefined;
}

if (process.env.SEALKIT_WEB_CLIENT_ID) {
  const label = 'authorization code';
  const web = { client_id: env('SEALKIT_WEB_CLIENT_ID') };
  const redirectUri = env('SEALKIT_WEB_REDIRECT_URI');
  check(
    typeof as.authorization_endpoint === 'string' && as.code_challenge_methods_supported?.includes('S256'),
    `${label}: discovery lists authorization_endpoint and S256`,
    JSON.stringify(as),
  );
  const keys = await generateKeyPair('ES256');
  const dpop = oauth.DPoP(web, keys);
  const jkt = await jwkThumbprint(keys.publicKey);
  const verifier = oauth.generateRandomCodeVerifier();
  const state = oauth.generateRandomState();
  const authUrl = new URL(as.authorization_endpoint);
  for (const [k, v] of Object.entries({
    response_type: 'code',
    client_id: web.client_id,
    redirect_uri: redirectUri,
    scope: 'read',
    state,
    code_challenge: await oauth.calculatePKCECodeChallenge(verifier),
    code_challenge_method: 'S256',
    dpop_jkt: jkt,
  })) authUrl.searchParams.set(k, v);

  // The person: open the login page, sign in, approve.
  const loginPage = await recordingFetch(authUrl.href, { redirect: 'manual' });
  const loginHtml = await loginPage.text();
  const cookie1 = (loginPage.headers.get('set-cookie') ?? '').split(';')[0];
  check(
    loginPage.status === 200 && /type="password"/.test(loginHtml) && cookie1.startsWith('__Host-'),
    `${label}: login page (password form, __Host- session cookie)`,
    `HTTP ${loginPage.status}`,
  );
  check(
    /frame-ancestors 'none'/.test(loginPage.headers.get('content-security-policy') ?? ''),
    `${label}: login page CSP has frame-ancestors 'none'`,
  );
  const consentPage = await recordingFetch(new URL('/authorize/login', issuer).href, {
    method: 'POST',
    redirect: 'manual',
    headers: { 'content-type': 'application/x-www-form-urlencoded', cookie: cookie1 },
    body: new URLSearchParams({
      csrf: formField(loginHtml, 'csrf'),
      request: formField(loginHtml, 'request'),
      username: env('SEALKIT_USER'),
      password: env('SEALKIT_USER_PASSWORD'),
    }).toString(),
  });
  const consentHtml = await consentPage.text();
  const cookie2 = (consentPage.headers.get('set-cookie') ?? '').split(';')[0];
  check(
    consentPage.status === 200 && /value="approve"/.test(consentHtml) && /value="deny"/.test(consentHtml),
    `${label}: signed in, consent page with approve and deny`,
    `HTTP ${consentPage.status}`,
  );
  const decided = await recordingFetch(new URL('/authorize/decision', issuer).href, {
    method: 'POST',
    redirect: 'manual',
    headers: { 'content-type': 'application/x-www-form-urlencoded', cookie: cookie2 },
    body: new URLSearchParams({
      csrf: formField(consentHtml, 'csrf'),
      request: formField(consentHtml, 'request'),
      decision: 'approve',
    }).toString(),
  });
  const location = decided.headers.get('location') ?? '';
  check(
    decided.status === 303 && location.startsWith(redirectUri),
    `${label}: approve redirects to the registered redirect URI`,
    `HTTP ${decided.status} location=${location}`,
  );

  let params;
  try {
    params = oauth.validateAuthResponse(as, web, new URL(location), state);
  } catch (err) {
    fail(`${label}: oauth4webapi validates the callback (state, iss)`, describeError(err));
  }
  pass(`${label}: oauth4webapi validated the callback (state, iss)`);

  let tokens;
  try {
    const res = await oauth.authorizationCodeGrantRequest(as, web, oauth.None(), params, redirectUri, verifier, {
      ...http,
      DPoP: dpop,
    });
    tokens = await oauth.processAuthorizationCodeResponse(as, web, res);
  } catch (err) {
    fail(`${label}: code exchange with PKCE and DPoP`, describeError(err));
  }
  pass(`${label}: code exchange with PKCE (S256) and DPoP`);
  await checkDPoPToken(label, tokens, tokens.token_type, keys);
  check(
    typeof tokens.refresh_token === 'string',
    `${label}: a refresh token (DPoP-bound public client)`,
  );
  check(jwtPart(tokens.access_token, 1).sub === env('SEALKIT_USER'), `${label}: sub is the user`);

  let rotated;
  try {
    const res = await oauth.refreshTokenGrantRequest(as, web, oauth.None(), tokens.refresh_token, {
      ...http,
      DPoP: dpop,
    });
    rotated = await oauth.processRefreshTokenResponse(as, web, res);
  } catch (err) {
    fail(`${label}: refresh with the bound key`, describeError(err));
  }
  check(
    rotated.refresh_token && rotated.refresh_token !== tokens.refresh_token,
    `${label}: refresh with the bound key rotates the refresh token`,
  );
  {
    const other = oauth.DPoP(web, await generateKeyPair('ES256'));
    let refused;
    try {
      await oauth.processRefreshTokenResponse(
        as,
        web,
        await oauth.refreshTokenGrantRequest(as, web, oauth.None(), rotated.refresh_token, { ...http, DPoP: other }),
      );
    } catch (err) {
      refused = err;
    }
    check(refused !== undefined, `${label}: refresh with another DPoP key refused`, 'it was accepted');
  }
  {
    let refused;
    try {
      await oauth.processRefreshTokenResponse(
        as,
        web,
        await oauth.refreshTokenGrantRequest(as, web, oauth.None(), tokens.refresh_token, { ...http, DPoP: dpop }),
      );
    } catch (err) {
      refused = err;
    }
    check(refused?.error === 'invalid_grant', `${label}: reuse of a refresh token refused (invalid_grant)`, describeError(refused));
  }
  for (const [what, token] of [
    ['first access token', tokens.access_token],
    ['rotated access token', rotated.access_token],
    ['rotated refresh token', rotated.refresh_token],
  ]) {
    const { body } = await introspect(token);
    check(body?.active === false, `${label}: after reuse the ${what} is inactive`, JSON.stringify(body));
  }
}

console.log(summary());
