// A real OpenID provider for the sign-in tests: panva's oidc-provider, certified, with one
// static confidential client that must use PKCE (S256), ID tokens carrying email and name,
// and the library's development login pages behind a check that only the listed accounts'
// passwords pass (the pages alone accept anyone). Consent is skipped for the test client,
// as a company's IdP does for its own applications. tests/peers/oidc.py starts it with its
// settings as JSON in DOCKYARD_TEST_OIDC; it prints "listening" once it answers.
import { generateKeyPairSync } from 'node:crypto';
import * as querystring from 'node:querystring';

import Provider from 'oidc-provider';

const config = JSON.parse(process.env.DOCKYARD_TEST_OIDC);
const { port, client, accounts } = config;
const issuer = `http://127.0.0.1:${port}`;
// The provider's account id is the token's `sub`; people type their login on the form.
const bySub = Object.fromEntries(Object.values(accounts).map((a) => [a.sub, a]));

const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signing = { ...privateKey.export({ format: 'jwk' }), kid: 'test-rs256', alg: 'RS256', use: 'sig' };

const provider = new Provider(issuer, {
  clients: [{
    client_id: client.id,
    client_secret: client.secret,
    redirect_uris: client.redirect_uris,
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  jwks: { keys: [signing] },
  cookies: { keys: ['dockyard-test-oidc-cookie-key'] },
  pkce: { required: () => true },
  scopes: ['openid', 'email', 'profile'],
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'] },
  features: { devInteractions: { enabled: true } },
  // By default email and name ride in the ID token itself, as most company IdPs send them;
  // with `conform` they are only at userinfo, as the spec's strict reading has it.
  conformIdTokenClaims: Boolean(config.conform),
  ttl: {
    AccessToken: 600, AuthorizationCode: 60, IdToken: 600, Interaction: 600, Session: 3600, Grant: 3600,
  },
  async findAccount(_ctx, id) {
    const account = bySub[id];
    if (!account) return undefined;
    return {
      accountId: id,
      async claims() {
        return {
          sub: account.sub, email: account.email, email_verified: true, name: account.name,
        };
      },
    };
  },
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId
      || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) return ctx.oidc.provider.Grant.find(grantId);
    if (ctx.oidc.client.clientId !== client.id) return undefined;
    const grant = new ctx.oidc.provider.Grant({
      clientId: client.id, accountId: ctx.oidc.session.accountId,
    });
    grant.addOIDCScope('openid email profile');
    await grant.save();
    return grant;
  },
});

// The development login form posts to /interaction/:uid; its login must name a listed
// account and its password must be that account's, or the form answers 401. The login is
// then replaced by the account's subject, which the dev pages take as the account id.
provider.use(async (ctx, next) => {
  if (ctx.method === 'POST' && /^\/interaction\/[^/]+$/.test(ctx.path)) {
    const chunks = [];
    for await (const chunk of ctx.req) chunks.push(chunk);
    const form = querystring.parse(Buffer.concat(chunks).toString());
    if (form.prompt === 'login') {
      const account = accounts[form.login];
      if (!account || account.password !== form.password) {
        ctx.status = 401;
        ctx.type = 'text';
        ctx.body = 'wrong login or password';
        return;
      }
      form.login = account.sub;
    }
    ctx.req.body = form;
  }
  await next();
});

provider.listen(port, '127.0.0.1', () => {
  process.stdout.write(`listening ${issuer}\n`);
});
