// A real OpenID Connect provider (panva/oidc-provider) for Gatehouse integration tests.
//
// Usage: node server.mjs [--port N] [--alg RS256|ES256|EdDSA]
//   port: argv --port, else $OIDC_ISSUER_PORT, else 0 (an ephemeral port; read it from READY).
//   alg:  argv --alg, else $OIDC_ISSUER_ALG, else RS256 — the access-token signing algorithm.
//
// Prints `READY <issuer>` on stdout once listening. Signing keys are generated at every start
// and never written to disk. Test-only: plain http, static client secrets, in-memory state.
// See README.md for the clients it knows.

import * as crypto from 'node:crypto';
import * as http from 'node:http';
import { parseArgs } from 'node:util';

import Provider from 'oidc-provider';

const { values: args } = parseArgs({
  options: {
    port: { type: 'string' },
    alg: { type: 'string' },
  },
});

const port = Number(args.port ?? process.env.OIDC_ISSUER_PORT ?? 0);
const alg = args.alg ?? process.env.OIDC_ISSUER_ALG ?? 'RS256';
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error(`invalid port: ${args.port ?? process.env.OIDC_ISSUER_PORT}`);
  process.exit(2);
}
if (!['RS256', 'ES256', 'EdDSA'].includes(alg)) {
  console.error(`unsupported alg: ${alg} (use RS256, ES256 or EdDSA)`);
  process.exit(2);
}

/** Resource indicators must be absolute URIs (RFC 8707); each maps to a JWT `aud`. */
const RESOURCES = {
  'urn:gatehouse': { audience: 'gatehouse', scope: 'db' },
  'urn:other-api': { audience: 'other-api', scope: 'db' },
};
const DEFAULT_RESOURCE = 'urn:gatehouse';

/** A private JWK for `jwkAlg`, tagged with a fresh kid. */
function generateJwk(jwkAlg) {
  let pair;
  if (jwkAlg === 'RS256') {
    pair = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  } else if (jwkAlg === 'ES256') {
    pair = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  } else {
    pair = crypto.generateKeyPairSync('ed25519');
  }
  const jwk = pair.privateKey.export({ format: 'jwk' });
  return { ...jwk, alg: jwkAlg, use: 'sig', kid: `${jwkAlg.toLowerCase()}-${crypto.randomUUID()}` };
}

// oidc-provider signs ID tokens with RS256 by default, so an RSA key is always present.
const keys = [generateJwk('RS256')];
if (alg !== 'RS256') keys.unshift(generateJwk(alg));

/** Test clients. `gatehouse` holds what the token customisers put in each client's tokens. */
const clients = [
  {
    client_id: 'svc-reporting',
    gatehouse: { groups: ['reporting', 'readonly'] },
  },
  {
    client_id: 'svc-dba',
    gatehouse: { groups: 'dba' },
  },
  {
    client_id: 'agent-7',
    gatehouse: {
      subject: 'alice@example.com',
      groups: ['analysts'],
      act: { sub: 'agent-7' },
    },
  },
  {
    client_id: 'sub-agent-3',
    gatehouse: {
      subject: 'alice@example.com',
      groups: ['analysts'],
      act: { sub: 'sub-agent-3', act: { sub: 'agent-7', iss: 'https://agents.example.com' } },
    },
  },
  {
    // The person agent-7 acts for, signing in directly.
    client_id: 'alice',
    gatehouse: { subject: 'alice@example.com', groups: ['analysts'] },
  },
  {
    // A CI job's token with the claims a CI provider puts in it.
    client_id: 'ci-main',
    gatehouse: {
      groups: ['ci'],
      claims: { repository: 'bank/payments', ref: 'refs/heads/main', environment: 'production' },
    },
  },
  {
    client_id: 'ci-branch',
    gatehouse: {
      groups: ['ci'],
      claims: { repository: 'bank/payments', ref: 'refs/heads/feature-x', environment: 'staging' },
    },
  },
  {
    client_id: 'short-lived',
    gatehouse: { groups: ['reporting'], ttl: 1 },
  },
  {
    // A session opened with this token must end when it expires.
    client_id: 'expiring-analyst',
    gatehouse: { groups: ['analysts'], ttl: 4 },
  },
  {
    // A token whose `sub` looks like an API key's subject: it must not pass for the key.
    client_id: 'impostor',
    gatehouse: { subject: 'key:nightly-report' },
  },
].map(({ client_id, gatehouse }) => ({
  client_id,
  client_secret: `${client_id}-secret`,
  grant_types: ['client_credentials'],
  response_types: [],
  redirect_uris: [],
  token_endpoint_auth_method: 'client_secret_basic',
  scope: 'db',
  gatehouse,
}));

const server = http.createServer();
server.listen(port, '127.0.0.1', () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;

  const provider = new Provider(issuer, {
    clients,
    jwks: { keys },
    scopes: ['db'],
    ttl: {
      // The resource server's accessTokenTTL decides; this only silences the default's notice.
      ClientCredentials: (ctx, token) => token.resourceServer?.accessTokenTTL ?? 300,
    },
    // Client metadata that carries the claims below; validated only for type.
    extraClientMetadata: {
      properties: ['gatehouse'],
      validator(ctx, key, value) {
        if (key === 'gatehouse' && value !== undefined && typeof value !== 'object') {
          throw new Error('gatehouse must be an object');
        }
      },
    },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: async (ctx, client, oneOf) => oneOf ?? DEFAULT_RESOURCE,
        useGrantedResource: async () => true,
        getResourceServerInfo: async (ctx, resourceIndicator, client) => {
          const resource = RESOURCES[resourceIndicator];
          if (!resource) throw new Provider.errors.InvalidTarget();
          return {
            scope: resource.scope,
            audience: resource.audience,
            accessTokenFormat: 'jwt',
            accessTokenTTL: client.gatehouse?.ttl ?? 300,
            jwt: { sign: { alg } },
          };
        },
      },
    },
    // `groups`, the RFC 8693 `act` chain and any other claims come from the client's metadata.
    extraTokenClaims: async (ctx, token) => {
      const meta = token.client?.gatehouse ?? ctx.oidc.client?.gatehouse ?? {};
      const extra = {};
      if (meta.groups !== undefined) extra.groups = meta.groups;
      if (meta.act !== undefined) extra.act = meta.act;
      Object.assign(extra, meta.claims ?? {});
      return extra;
    },
    formats: {
      customizers: {
        // For client_credentials the library sets `sub` to the client id; a delegating
        // client (an agent acting for a person) gets the person as `sub` instead.
        jwt: async (ctx, token, jwt) => {
          const subject = (token.client ?? ctx.oidc.client)?.gatehouse?.subject;
          if (subject) jwt.payload.sub = subject;
        },
      },
    },
  });

  provider.on('server_error', (ctx, err) => console.error('server_error', err));
  server.on('request', provider.callback());
  console.log(`READY ${issuer}`);
});

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
