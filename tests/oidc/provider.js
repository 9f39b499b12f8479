// A real OpenID provider for Relais's integration tests: panva's certified
// oidc-provider, on loopback, with its development login and consent forms.
// Never part of the build or the server.
//
// Usage: node provider.js  — listens on a free 127.0.0.1 port and prints one
// JSON line {"issuer": "http://127.0.0.1:PORT"}; exits when stdin closes
// (its parent, the test binary, has ended).
//
// - Clients are registered per test through dynamic registration (POST
//   /reg), so each test server's callback URI can be registered.
// - Any login is accepted (the dev form ignores the password). A login of
//   the form `rpps-<11 digits>` carries the national id `8<RPPS>` in
//   `SubjectNameID`, as Pro Santé Connect's userinfo does; others carry none.
// - Signing keys: one RSA (RS256) and one P-256 (ES256), each with a `kid`;
//   a client picks its algorithm with `id_token_signed_response_alg`.
// - POST /test/rotate replaces both keys (new kids): a relying party holding
//   the old key set must fetch the new one.

import http from 'node:http';
import crypto from 'node:crypto';
import Provider from 'oidc-provider';

function freshKeys() {
  const stamp = crypto.randomUUID();
  const rsa = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey
    .export({ format: 'jwk' });
  const ec = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey
    .export({ format: 'jwk' });
  return [
    { ...rsa, kid: `rsa-${stamp}`, use: 'sig', alg: 'RS256' },
    { ...ec, kid: `ec-${stamp}`, use: 'sig', alg: 'ES256' },
  ];
}

function claimsOf(accountId) {
  const match = /^rpps-(\d{11})$/.exec(accountId);
  const claims = { sub: accountId };
  if (match) claims.SubjectNameID = `8${match[1]}`;
  return claims;
}

// One cookie key for the process: a key rotation keeps browser sessions.
const cookieKey = crypto.randomBytes(32).toString('hex');

// The metadata of every client registered so far: a rotation builds a new
// Provider (new keys) that knows them as static clients.
const registered = [];
const KEPT = ['client_id', 'client_secret', 'redirect_uris', 'grant_types', 'response_types',
  'token_endpoint_auth_method', 'id_token_signed_response_alg'];

function build(issuer, keys) {
  const clients = registered.map((c) => Object.fromEntries(KEPT.filter((k) => k in c).map((k) => [k, c[k]])));
  const provider = new Provider(issuer, {
    clients,
    jwks: { keys },
    cookies: { keys: [cookieKey] },
    features: {
      devInteractions: { enabled: true },
      registration: { enabled: true },
    },
    claims: { openid: ['sub', 'SubjectNameID'] },
    async findAccount(ctx, id) {
      return { accountId: id, async claims() { return claimsOf(id); } };
    },
  });
  provider.proxy = false;
  return provider;
}

const server = http.createServer();
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  let provider = build(issuer, freshKeys());
  server.on('request', (req, res) => {
    if (req.method === 'POST' && req.url === '/test/rotate') {
      provider = build(issuer, freshKeys());
      res.writeHead(204).end();
      return;
    }
    if (req.method === 'POST' && req.url === '/reg') {
      // Remember what was registered (the answer carries the metadata).
      const end = res.end.bind(res);
      res.end = (body, ...rest) => {
        try {
          const parsed = JSON.parse(String(body));
          if (parsed.client_id) registered.push(parsed);
        } catch { /* not JSON: an error answer */ }
        return end(body, ...rest);
      };
    }
    provider.callback()(req, res);
  });
  process.stdout.write(`${JSON.stringify({ issuer })}\n`);
});

process.stdin.on('end', () => process.exit(0));
process.stdin.on('close', () => process.exit(0));
process.stdin.resume();
