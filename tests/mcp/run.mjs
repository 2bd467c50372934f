// An MCP client no one here wrote — the official TypeScript SDK (@modelcontextprotocol/sdk) —
// against /mcp: lists the tools, then memory_store → memory_search and task_create →
// task_claim, checking the structured results.
//
//   node run.mjs http://127.0.0.1:PORT/mcp [TOKEN]
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';

const [url, token] = process.argv.slice(2);
const fail = (what, detail) => {
  console.log(JSON.stringify({ ok: false, what, detail }));
  process.exit(1);
};
const pass = (what, detail) => console.log(JSON.stringify({ ok: true, what, detail }));

const headers = token ? { Authorization: `Bearer ${token}` } : {};
const transport = new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers } });
const client = new Client({ name: 'ruvector-mcp-test', version: '1.0.0' });
try {
  await client.connect(transport);
  const { tools } = await client.listTools();
  const names = tools.map((t) => t.name).sort();
  const want = ['agent_register', 'agents', 'heartbeat', 'memory_delete', 'memory_retrieve', 'memory_search', 'memory_store', 'publish', 'similar_tasks', 'task_claim', 'task_complete', 'task_create', 'task_fail', 'task_status'];
  if (JSON.stringify(names) !== JSON.stringify(want)) fail('tools/list', names);
  const store = tools.find((t) => t.name === 'memory_store');
  if (!store.inputSchema?.required?.includes('namespace')) fail('schema', store.inputSchema);
  pass('tools/list', `${names.length} tools with schemas`);

  const call = async (name, args) => {
    const r = await client.callTool({ name, arguments: args });
    if (r.isError) fail(name, r.structuredContent ?? r.content);
    return r.structuredContent;
  };
  await call('memory_store', { namespace: 'notes', key: 'design', value: { text: 'actors' }, embedding: [1, 0, 0] });
  await call('memory_store', { namespace: 'notes', key: 'ops', value: { text: 'runbook' }, embedding: [0, 1, 0] });
  const found = await call('memory_search', { namespace: 'notes', vector: [0.9, 0.1, 0], k: 1 });
  if (found.type !== 'memory_results' || found.results?.[0]?.key !== 'design') fail('memory_search', found);
  pass('memory', 'memory_store then memory_search found the nearest');

  await call('agent_register', { agent_id: 'mcp-agent', agent_type: 'assistant' });
  const created = await call('task_create', { task_type: 'review', priority: 'high', task_data: { pr: 7 } });
  const claimed = await call('task_claim', { agent_id: 'mcp-agent' });
  if (claimed.type !== 'task_assigned' || claimed.task?.task_id !== created.task_id) fail('task_claim', claimed);
  pass('tasks', `task_create then task_claim got ${created.task_id}`);

  const bad = await client.callTool({ name: 'task_status', arguments: { task_id: 'nope' } });
  if (!bad.isError || bad.structuredContent?.error?.code !== 'not_found') fail('errors', bad);
  pass('errors', 'an unknown task is a tool error with code not_found');
  await client.close();
  process.exit(0);
} catch (e) {
  fail('exception', String(e?.stack ?? e));
}
