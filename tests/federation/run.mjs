// Drives agentic-flow's own FederationHubClient (from the npm package agentic-flow@2.1.3,
// unpacked into ./vendor by the Rust test, not modified) against a running server.
//
//   node run.mjs open ws://127.0.0.1:PORT/api/v1/federation
//   node run.mjs auth ws://127.0.0.1:PORT/api/v1/federation TOKEN_ACME TOKEN_BETA
//
// Prints one JSON line per check and exits non-zero on the first failure.
import { FederationHubClient } from './vendor/package/dist/federation/FederationHubClient.js';

process.env.QUIET = 'true';
const [mode, endpoint, tokenAcme = 'none', tokenBeta = 'none'] = process.argv.slice(2);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function fail(what, detail) {
  console.log(JSON.stringify({ ok: false, what, detail }));
  process.exit(1);
}
function pass(what, detail) {
  console.log(JSON.stringify({ ok: true, what, detail }));
}

/** A client whose every received message is recorded (its own handling still runs). */
function client(agentId, tenantId, token) {
  const c = new FederationHubClient({ endpoint, agentId, tenantId, token });
  c.seen = [];
  const handle = c.handleMessage.bind(c);
  c.handleMessage = (m) => {
    c.seen.push(m);
    handle(m);
  };
  return c;
}

async function until(what, check, ms = 5000) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    const v = check();
    if (v) return v;
    await sleep(25);
  }
  fail(what, 'timed out');
}

const episode = {
  sessionId: 's-1',
  task: 'summarise the design',
  input: 'ARCHITECTURE.md',
  output: 'a summary',
  reward: 0.9,
  critique: 'fine',
  success: true,
  tokensUsed: 321,
  latencyMs: 45,
};

async function openMode() {
  const a1 = client('agent-1', 'acme', tokenAcme);
  const a2 = client('agent-2', 'acme', tokenAcme);
  const b1 = client('agent-3', 'beta', tokenBeta);
  await a1.connect();
  await a2.connect();
  await b1.connect();
  for (const c of [a1, a2, b1]) {
    if (!c.isConnected() || c.seen[0]?.type !== 'ack') fail('connect', c.seen);
  }
  pass('connect', 'three clients, first frame ack');

  // agent-1 pushes one episode through the client's own sync().
  a1.getLocalChanges = async () => [episode];
  await a1.sync();
  await until('push acknowledged', () => a1.seen.filter((m) => m.type === 'ack').length >= 3);
  const live = await until('live broadcast to agent-2', () => a2.seen.find((m) => m.type === 'push'));
  if (live.agentId !== 'agent-1' || live.data?.[0]?.task !== episode.task) fail('broadcast', live);
  pass('broadcast', 'agent-2 got the push live');

  // agent-2 pulls it back.
  await a2.sync();
  const pulled = await until('pull by agent-2', () => a2.seen.find((m) => m.type === 'ack' && m.data?.length));
  const row = pulled.data[0];
  for (const k of ['id', 'agentId', 'sessionId', 'task', 'input', 'output', 'reward', 'critique', 'success', 'tokensUsed', 'latencyMs', 'vectorClock', 'createdAt']) {
    if (!(k in row)) fail('row fields', { missing: k, row });
  }
  if (row.agentId !== 'agent-1' || row.tokensUsed !== 321) fail('row', row);
  if (!(a2.getSyncStats().vectorClock['agent-1'] >= 1)) fail('clock merged', a2.getSyncStats());
  pass('pull', 'agent-2 pulled agent-1\'s episode; its clock merged');

  // Its clock now covers the episode: a second pull brings nothing new.
  const before = a2.seen.length;
  await a2.sync();
  const again = await until('second pull', () => a2.seen.slice(before).find((m) => m.type === 'ack'));
  if ((again.data ?? []).length !== 0) fail('covered by the clock', again);
  pass('clock', 'a covered episode is not sent again');

  // Another tenant sees nothing, live or pulled.
  await b1.sync();
  const other = await until('pull by beta', () => b1.seen.find((m) => m.type === 'ack' && 'data' in m));
  if (other.data.length !== 0 || b1.seen.some((m) => m.type === 'push')) fail('tenant isolation', b1.seen);
  pass('tenants', 'beta got nothing');

  // An unknown type gets the reference hub's error.
  a1.ws.send(JSON.stringify({ type: 'gossip' }));
  const err = await until('unknown type', () => a1.seen.find((m) => m.type === 'error'));
  if (err.error !== 'Unknown message type: gossip') fail('unknown type', err);
  pass('errors', err.error);
  for (const c of [a1, a2, b1]) await c.disconnect();
}

async function authMode() {
  const good = client('agent-1', 'acme', tokenAcme);
  await good.connect();
  pass('auth', 'a valid token for its tenant is accepted');
  await good.disconnect();
  for (const [what, c] of [
    ['bad token', client('agent-x', 'acme', 'not-a-key')],
    ['other tenant', client('agent-y', 'beta', tokenAcme)],
  ]) {
    let refused = null;
    try {
      await c.connect();
    } catch (e) {
      refused = e.message;
    }
    if (!refused || refused === 'Authentication timeout') fail(what, refused);
    pass(what, refused);
    await c.disconnect();
  }
}

try {
  if (mode === 'auth') await authMode();
  else await openMode();
  process.exit(0);
} catch (e) {
  fail('exception', String(e?.stack ?? e));
}
